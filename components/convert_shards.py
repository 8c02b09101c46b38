from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def convert_shards(
    plan: Input[Artifact],
    item: dict,
    output_url: str,
    grayscale: str,
    image_size: str,
    workers: int,
    shards: Output[Dataset],
):
    """Convert one work item's images to TFRecord shards under output_url.

    Every input file becomes a record or a reject with its reason. Shards are published
    atomically, and a re-run (or a retry) skips shards that are already complete.

    Args:
        plan: The plan written by parse-metadata.
        item: One work item from parse-metadata: the shard ids to write.
        output_url: Where the TFRecords go: <output_url>/<split>/<split>-NNNNN-of-MMMMM.tfrecord.
        grayscale: "rgb" converts grayscale/CMYK images to RGB; "skip" leaves them out.
        image_size: "HxW" rejects images of any other size; "" accepts all sizes.
        workers: Processes to use; 0 uses every CPU the pod is given (its cgroup quota).

    Returns:
        shards: The per-shard statistics (JSON); its metadata holds the record count and
            the shard files under output_url.
    """
    from imagenet_tfrecords.convert import Options
    from imagenet_tfrecords.tasks import convert_step

    options = Options(grayscale=grayscale, image_size=image_size)
    shards.metadata.update(convert_step(plan.path, item, output_url, options, workers, shards.path))
