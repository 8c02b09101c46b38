"""The pipeline's conversion step as a component: one task's shards (tasks.convert_step)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def convert_shards(plan: Input[Artifact], task: str, shards: Output[Dataset]):
    """Convert one task's images to TFRecord shards under the plan's output_url.

    The output, the conversion's options (format, grayscale, image_size, resize...) and the processes
    to use are the plan's: parse-metadata was given them, once, for every step. Every input file
    becomes a record or a reject with its reason. Shards are published atomically, and a re-run (or a
    retry) skips shards that are already complete. A task that cannot see the plan's output (a local
    path of another machine) fails saying so.

    Args:
        plan: The plan written by parse-metadata.
        task: The task's number, as text (a loop item of parse-metadata's Output); plan.json lists
            the shards it writes.

    Returns:
        shards: The shard files this task wrote (JSON). Its metadata holds a few numbers:
            records, shards, resumed (shards kept from an earlier run), started and finished
            (Unix times). Per-shard statistics are under output_url/_work/.
    """
    from imagenet_tfrecords.tasks import convert_step

    shards.metadata.update(convert_step(plan.path, int(task), shards.path))
