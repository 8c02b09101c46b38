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
) -> list[int]:
    """Read the dataset's metadata and plan the conversion.

    Fails before anything is fanned out when the layout's metadata (TinyImageNet: wnids.txt,
    words.txt, val/val_annotations.txt) is missing or malformed (the message names the file and
    line), when no layout is recognised, or when output_url cannot be used.

    Args:
        data_url: Root of the dataset (local path, gs://, s3://).
        output_url: Where the conversion writes; checked here, before any work: not the dataset
            folder nor inside its split folders, and (local paths) a folder that can be written.
        shard_size: Images per val/test shard (train shards hold one class each).
        max_tasks: At most this many conversion tasks (1 to 100); shards are grouped evenly.
        layout: "tinyimagenet" (wnids.txt, words.txt, train/<wnid>/images/, val/val_annotations.txt),
            "imagenet" (Kaggle's ILSVRC2012: LOC_synset_mapping.txt, LOC_val_solution.csv,
            ILSVRC/Data/CLS-LOC/<split>/), "imagefolder" (<split>/<class>/<image>) or "auto":
            detect it; plan.json and the plan's metadata say which.

    Returns:
        plan: plan.json: the classes, every shard to write, the shards of each task, and rejects
            found in the metadata.
        labels: labels.txt: one "wnid<TAB>words" line per class; the line index is the label.
        Output: The task numbers to fan out over (0 to tasks - 1); plan.json lists each one's shards.
    """
    from imagenet_tfrecords.tasks import plan_step

    items, summary = plan_step(data_url, output_url, shard_size, max_tasks, plan.path, labels.path, layout)
    plan.metadata.update(summary)
    labels.metadata["num_classes"] = summary["classes"]
    return items
