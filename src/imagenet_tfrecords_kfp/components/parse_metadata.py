"""The pipeline's first step as a component: plan the conversion (tasks.plan_step)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def parse_metadata(
    data_url: str,
    output_url: str,
    plan: Output[Artifact],
    labels: Output[Artifact],
    shard_size: int = 500,
    max_tasks: int = 64,
    layout: str = "auto",
    train_order: str = "mixed",
    train_shards: int = 0,
    format: str = "seed",
    take_over_lease: bool = False,
    grayscale: str = "rgb",
    image_size: str = "",
    resize: str = "",
    resize_mode: str = "squash",
    shorter_side: int = 0,
    label_offset: int = 0,
    jpeg_quality: int = 95,
    workers: int = 0,
    max_reject_fraction: float = 0.01,
) -> list[str]:
    """Read the dataset's metadata and plan the conversion, for every later step.

    The conversion's options (format, grayscale, image_size, resize, resize_mode, shorter_side,
    label_offset, jpeg_quality), output_url, workers and max_reject_fraction are given here, once:
    plan.json carries them to convert-shards and aggregate-stats, which take none of their own. Each
    optional input defaults to the pipeline's default.

    Fails before anything is fanned out when a parameter is not one the command line accepts (with
    its message: "grayscale: invalid choice: 'RGB' (choose from 'rgb', 'skip')"), when the layout's
    metadata (TinyImageNet: wnids.txt, words.txt, val/val_annotations.txt) is missing or malformed
    (the message names the file and line), when no layout is recognised, or when output_url cannot
    be used: among others a folder that is not empty and was not written by imagenet-tfrecords (its
    marker file, imagenet-tfrecords.json, says which are). Then it marks the output incomplete until the
    aggregation ends, and removes the files earlier runs wrote there that this plan does not make.

    Args:
        data_url: Root of the dataset (gs://, s3://, or a path every step sees: on a cluster, a volume
            mounted at that path).
        output_url: Where the conversion writes: gs://, s3://, or a path on a volume that every step
            mounts at that path (a cluster's pods do not see each other's local disks: a task that
            cannot see the plan's output fails saying so). Checked here, before any work: not the
            dataset folder nor inside its split folders, new, empty or an earlier output of this
            project, and (local paths) a folder that can be written.
        shard_size: Images per val/test shard.
        max_tasks: At most this many conversion tasks (1 to 64); shards are grouped evenly.
        layout: "tinyimagenet" (wnids.txt, words.txt, train/<wnid>/images/, val/val_annotations.txt),
            "imagenet" (Kaggle's ILSVRC2012: LOC_synset_mapping.txt, LOC_val_solution.csv,
            ILSVRC/Data/CLS-LOC/<split>/; or its original archives: ILSVRC2012_devkit_t12.tar.gz,
            ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar), "imagefolder" (<split>/<class>/<image>),
            "parquet" (a Hugging Face download: data/<split>-NNNNN-of-MMMMM.parquet; options after a colon:
            "parquet:config=NAME,image=COLUMN,label=COLUMN"), "webdataset" (tar shards <name>-<split>-NNNN.tar;
            "webdataset:classes=FILE") or "auto": detect it; plan.json and the plan's metadata say which.
        train_order: "mixed": every train shard mixes the classes (files ordered by a stable hash
            of their path, as TFDS does); "per-class": one shard per class, in file order.
        train_shards: Mixed train shards; 0: about 1,000 images each.
        format: The record format: "seed", "tf-models" or "tfds" (TFDS's file names, in output_url itself).
        take_over_lease: gs:// and s3:// outputs: take over the lease of another run that holds
            output_url, when that run is known to be dead. Otherwise a run that holds the output
            (its lease under output_url/_work/ not expired) makes this step fail, naming it.
        grayscale: "rgb" converts grayscale/CMYK images to RGB; "skip" leaves them out (counted).
        image_size: "HxW" rejects images of any other size (as read, before resize); "" accepts all sizes.
        resize: "WxH" (width first, e.g. "64x64") makes every image W x H; "" keeps each image's size.
        resize_mode: With resize: "squash" (the whole image) or "center-crop" (the centre, aspect kept).
        shorter_side: N scales images whose shorter side is longer than N down to N (aspect kept); 0: off.
            Not with resize.
        label_offset: tf-models: added to every label (1: the 1,001 classes of Model Garden and slim).
        jpeg_quality: tf-models and tfds: quality of the images encoded anew (clean JPEGs are stored as is).
        workers: Processes per conversion task; 0 uses every CPU the task's pod is given (its cgroup quota).
        max_reject_fraction: aggregate-stats fails, after writing the reports, when rejected inputs /
            found inputs exceeds this.

    Returns:
        plan: plan.json: the classes, every shard to write, the shards of each task, and rejects
            found in the metadata; each task's shards with their sources are in its slice,
            output_url/_work/plan/task-NNNNN.jsonl.
        labels: labels.txt: one "wnid<TAB>words" line per class; the line index is the label.
        Output: The task numbers to fan out over, as text ("0" to "tasks - 1"): a pipeline built from
            components/*.yaml, which lose element types, loops over them as STRING items too, and
            convert-shards takes its task as a string. plan.json lists each task's shards.
    """
    from imagenet_tfrecords.tasks import plan_step

    options = {
        "format": format,
        "grayscale": grayscale,
        "image_size": image_size,
        "resize": resize,
        "resize_mode": resize_mode,
        "shorter_side": shorter_side,
        "label_offset": label_offset,
        "jpeg_quality": jpeg_quality,
    }
    items, summary = plan_step(
        data_url,
        output_url,
        shard_size,
        max_tasks,
        plan.path,
        labels.path,
        layout,
        train_order,
        train_shards,
        options,
        take_over_lease,
        workers,
        max_reject_fraction,
    )
    plan.metadata.update(summary)
    labels.metadata["num_classes"] = summary["classes"]
    return [str(item) for item in items]
