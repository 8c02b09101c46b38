from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def aggregate_stats(
    plan: Input[Artifact],
    shards: Input[list[Dataset]],
    output_url: str,
    grayscale: str,
    image_size: str,
    max_reject_fraction: float,
    dataset: Output[Dataset],
    sizes: Output[Artifact],
    metrics: Output[Metrics],
):
    """Merge every task's statistics into sizes.txt, labels.txt, dataset_info.json, rejects.tsv.

    The reports are written under output_url and into the dataset artifact. The step fails
    after writing them when more than max_reject_fraction of the inputs were rejected.

    Args:
        plan: The plan written by parse-metadata.
        shards: The statistics of every convert-shards task (fan-in with dsl.Collected).
        output_url: Root of the converted dataset.
        grayscale: The grayscale policy used (recorded in dataset_info.json).
        image_size: The image size check used (recorded in dataset_info.json).
        max_reject_fraction: Fail when rejected inputs / found inputs exceeds this.
        dataset: Output. The converted dataset: dataset_info.json (shard files relative to
            its "root", which is output_url), sizes.txt, labels.txt, rejects.tsv. Read it
            with imagenet_tfrecords.load(dataset, "train").
        sizes: Output. sizes.txt: "train,N\\nval,N\\ntest,N".
        metrics: Output. Records per split, rejects, skipped and converted images.
    """
    from imagenet_tfrecords.convert import Options
    from imagenet_tfrecords.tasks import aggregate_step

    options = Options(grayscale=grayscale, image_size=image_size)
    paths = [s.path for s in shards]
    info = aggregate_step(plan.path, paths, output_url, options, max_reject_fraction, dataset.path, sizes.path)
    dataset.metadata.update({"root": info["root"], "records": {k: v["num_records"] for k, v in info["splits"].items()}})
    for split, s in info["splits"].items():
        metrics.log_metric(f"{split}_records", s["num_records"])
        metrics.log_metric(f"{split}_rejected", s["rejected"])
        metrics.log_metric(f"{split}_skipped", s["skipped"])
    metrics.log_metric("rejected_total", info["rejected"])
