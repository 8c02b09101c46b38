"""The pipeline's last step as a component: statistics, report and metrics (tasks.aggregate_step)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from .image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def aggregate_stats(
    plan: Input[Artifact],
    shards: Input[list[Dataset]],
    dataset: Output[Dataset],
    sizes: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
):
    """Merge every shard's statistics into sizes.txt, labels.txt, dataset_info.json, rejects.tsv.

    The statistics are read from output_url/_work/ (output_url: the plan's). The reports and
    report.html are written under output_url and into the artifacts, recording the options the plan
    carries (parse-metadata was given them, once, for every step). The step fails after writing the
    reports when more than the plan's max_reject_fraction of the inputs were rejected.

    Args:
        plan: The plan written by parse-metadata.
        shards: Every convert-shards task's artifact (fan-in with dsl.Collected); their
            metadata summarises each task (shards, resumed, records, start and end).

    Returns:
        dataset: The converted dataset: dataset_info.json (conversion_info.json in the tfds
            format; shard files relative to its "root", which is output_url), sizes.txt,
            labels.txt, rejects.tsv. Read it with imagenet_tfrecords.load(dataset, "train").
        sizes: sizes.txt: "train,N\\nval,N\\ntest,N".
        metrics: Records, rejects and skipped images per split and in total, images converted
            to RGB, bytes, and throughput: images/s per worker (records / summed shard seconds)
            and images/s over the conversion wall time (first task start to last task end).
        report: A self-contained HTML page (also written to output_url/report.html): records
            per split, class distribution, sample images decoded from the written TFRecords,
            rejects and skipped images.
    """
    from imagenet_tfrecords.stats import run_metrics
    from imagenet_tfrecords.tasks import aggregate_step

    info = aggregate_step(plan.path, [s.metadata for s in shards], dataset.path, sizes.path, report.path)
    dataset.metadata.update({"root": info["root"], "records": {k: v["num_records"] for k, v in info["splits"].items()}})
    for name, value in run_metrics(info).items():
        metrics.log_metric(name, value)
