"""The pipeline's first step as a component: plan the conversion (tasks.plan_step)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def parse_metadata(
    data_url: str,
    output_url: str,
    shard_size: int,
    max_tasks: int,
    plan: Output[Artifact],
    labels: Output[Artifact],
    layout: str = "auto",
    train_order: str = "mixed",
    train_shards: int = 0,
    format: str = "seed",
    take_over_lease: bool = False,
) -> list[str]:
    """Read the dataset's metadata and plan the conversion.

    Fails before anything is fanned out when the layout's metadata (TinyImageNet: wnids.txt,
    words.txt, val/val_annotations.txt) is missing or malformed (the message names the file and
    line), when no layout is recognised, or when output_url cannot be used: among others a folder
    that is not empty and was not written by imagenet-tfrecords (its marker file,
    imagenet-tfrecords.json, says which are). Then it marks the output incomplete until the
    aggregation ends, and removes the files earlier runs wrote there that this plan does not make.

    Args:
        data_url: Root of the dataset (local path, gs://, s3://).
        output_url: Where the conversion writes; checked here, before any work: not the dataset
            folder nor inside its split folders, new, empty or an earlier output of this project,
            and (local paths) a folder that can be written.
        shard_size: Images per val/test shard.
        max_tasks: At most this many conversion tasks (1 to 64); shards are grouped evenly.
        layout: "tinyimagenet" (wnids.txt, words.txt, train/<wnid>/images/, val/val_annotations.txt),
            "imagenet" (Kaggle's ILSVRC2012: LOC_synset_mapping.txt, LOC_val_solution.csv,
            ILSVRC/Data/CLS-LOC/<split>/; or its original archives: ILSVRC2012_devkit_t12.tar.gz,
            ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar), "imagefolder" (<split>/<class>/<image>) or "auto":
            detect it; plan.json and the plan's metadata say which.
        train_order: "mixed": every train shard mixes the classes (files ordered by a stable hash
            of their path, as TFDS does); "per-class": one shard per class, in file order.
        train_shards: Mixed train shards; 0: about 1,000 images each.
        format: The record format the conversion writes ("seed", "tf-models" or "tfds"): which
            files the output will hold.
        take_over_lease: gs:// and s3:// outputs: take over the lease of another run that holds
            output_url, when that run is known to be dead. Otherwise a run that holds the output
            (its lease under output_url/_work/ not expired) makes this step fail, naming it.

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
        format,
        take_over_lease,
    )
    plan.metadata.update(summary)
    labels.metadata["num_classes"] = summary["classes"]
    return [str(item) for item in items]
