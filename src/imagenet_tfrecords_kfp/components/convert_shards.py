"""The pipeline's conversion step as a component: one task's shards (tasks.convert_step)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def convert_shards(
    plan: Input[Artifact],
    task: str,
    output_url: str,
    grayscale: str,
    image_size: str,
    workers: int,
    shards: Output[Dataset],
    format: str = "seed",
    label_offset: int = 0,
    jpeg_quality: int = 95,
    resize: str = "",
    resize_mode: str = "squash",
    shorter_side: int = 0,
):
    """Convert one task's images to TFRecord shards under output_url.

    Every input file becomes a record or a reject with its reason. Shards are published
    atomically, and a re-run (or a retry) skips shards that are already complete.

    Args:
        plan: The plan written by parse-metadata.
        task: The task's number, as text (a loop item of parse-metadata's Output); plan.json lists
            the shards it writes.
        output_url: Where the TFRecords go: <output_url>/<split>/<split>-NNNNN-of-MMMMM.tfrecord.
        grayscale: "rgb" converts grayscale/CMYK images to RGB; "skip" leaves them out.
        image_size: "HxW" rejects images of any other size; "" accepts all sizes.
        workers: Processes to use; 0 uses every CPU the pod is given (its cgroup quota).
        format: The record format: "seed", "tf-models" or "tfds" (TFDS's file names, in output_url itself).
        label_offset: tf-models: added to every label (1: the 1,001 classes of Model Garden and slim).
        jpeg_quality: tf-models and tfds: quality of the images encoded anew (clean JPEGs are stored as is).
        resize: "WxH" (width first, e.g. "64x64") makes every image W x H; "" keeps each image's size.
        resize_mode: With resize: "squash" (the whole image) or "center-crop" (the centre, aspect kept).
        shorter_side: N scales images whose shorter side is longer than N down to N (aspect kept); 0: off.

    Returns:
        shards: The shard files this task wrote (JSON). Its metadata holds a few numbers:
            records, shards, resumed (shards kept from an earlier run), started and finished
            (Unix times). Per-shard statistics are under output_url/_work/.
    """
    from imagenet_tfrecords.convert import Options
    from imagenet_tfrecords.tasks import convert_step

    options = Options(
        grayscale=grayscale,
        image_size=image_size,
        format=format,
        label_offset=label_offset,
        jpeg_quality=jpeg_quality,
        resize=resize,
        resize_mode=resize_mode,
        shorter_side=shorter_side,
    )
    shards.metadata.update(convert_step(plan.path, int(task), output_url, options, workers, shards.path))
