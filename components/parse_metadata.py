from kfp import dsl
from kfp.dsl import Artifact, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def parse_metadata(
    data_url: str,
    shard_size: int,
    shards_per_task: int,
    plan: Output[Artifact],
    labels: Output[Artifact],
) -> list:
    """Read the dataset's metadata and plan the conversion.

    Fails before anything is fanned out when wnids.txt, words.txt or val/val_annotations.txt
    is missing or malformed; the message names the file and line.

    Args:
        data_url: Root of the TinyImageNet-layout dataset (local path, gs://, s3://).
        shard_size: Images per val/test shard (train shards hold one class each).
        shards_per_task: Shards converted by each ParallelFor task; 0 puts all in one task.

    Returns:
        plan: plan.json: the classes, every shard to write, and rejects found in the metadata.
        labels: labels.txt: one "wnid<TAB>words" line per class; the line index is the label.
        Output: The work items to fan out; each names the shards one conversion task writes.
    """
    from imagenet_tfrecords.tasks import plan_step

    items, summary = plan_step(data_url, shard_size, shards_per_task, plan.path, labels.path)
    plan.metadata.update(summary)
    labels.metadata["num_classes"] = summary["classes"]
    return items
