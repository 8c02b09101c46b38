"""TinyImageNet-layout dataset -> TFRecords: parse -> ParallelFor(convert) -> aggregate(Collected)."""

from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from imagenet_tfrecords.convert import Options
from imagenet_tfrecords.layouts import AUTO
from imagenet_tfrecords.plan import DEFAULT_MAX_TASKS, DEFAULT_PARALLELISM, DEFAULT_SHARD_SIZE, MIXED
from imagenet_tfrecords.stats import DEFAULT_MAX_REJECT_FRACTION

from ..components import aggregate_stats, convert_shards, parse_metadata

PIPELINE_NAME = "tinyimagenet-to-tfrecords"
# Every pod requests what it may use (limits = requests: nothing is refused under a ResourceQuota, nothing
# is evicted first under memory pressure). Planning forks a listing process per CPU; aggregation is one process.
TASK_CPUS = "2"
TASK_MEMORY = "1Gi"
PLAN_CPUS = "2"
PLAN_MEMORY = "1Gi"
AGGREGATE_CPUS = "1"
AGGREGATE_MEMORY = "1Gi"
# The open-source backend retries a conversion task when its container exits non-zero (not when
# its pod is evicted or preempted); Argo counts backoffMaxDuration from the first retry, so it
# must cover a whole long task. A retry resumes: finished shards are kept.
RETRIES = 2
RETRY_BACKOFF = "60s"
RETRY_WINDOW = "86400s"


def _pod(task, cpus: str, memory: str, image: str | None):
    task.set_cpu_request(cpus).set_cpu_limit(cpus)
    task.set_memory_request(memory).set_memory_limit(memory)
    if image:
        task.set_container_image(image)
    return task


class Outputs(NamedTuple):
    dataset: Dataset
    sizes: Artifact
    metrics: Metrics
    report: HTML


def build_pipeline(parallelism: int = DEFAULT_PARALLELISM, retries: bool = True, image: str | None = None):
    """The pipeline with at most ``parallelism`` conversion tasks running at once (0: no limit).

    ``image``: the container image of every step (default: the components' IMAGE).

    ``retries=False`` for local runs: on one machine a failure is deterministic (bad input, a
    permission, a bug) and retrying it with back-off only delays the message.
    """

    @dsl.pipeline(name=PIPELINE_NAME)
    def tinyimagenet_to_tfrecords(
        data_url: str,
        output_url: str,
        layout: str = AUTO,
        grayscale: str = Options.grayscale,
        max_tasks: int = DEFAULT_MAX_TASKS,
        shard_size: int = DEFAULT_SHARD_SIZE,
        train_order: str = MIXED,
        train_shards: int = 0,
        image_size: str = Options.image_size,
        max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
        workers: int = 0,
        format: str = Options.format,
        label_offset: int = Options.label_offset,
        jpeg_quality: int = Options.jpeg_quality,
        take_over_lease: bool = False,
        resize: str = Options.resize,
        resize_mode: str = Options.resize_mode,
        shorter_side: int = Options.shorter_side,
    ) -> Outputs:
        """Convert an image dataset (TinyImageNet, ImageNet or class folders) to TFRecord files of tf.train.Example.

        Records hold height, width, channel, label (int64), label_one_hot (one byte per class)
        and image_raw (uint8 pixels, H x W x 3), plus filename and wnid.

        Args:
            data_url: Root of the dataset: wnids.txt, words.txt, train/, val/, test/, or
                <split>/<class>/<image> folders (gs://bucket/..., s3://bucket/..., or a path every
                step sees: on a cluster, a volume mounted at that path).
            output_url: Where train/, val/, test/ shards, sizes.txt, labels.txt,
                dataset_info.json and rejects.tsv are written: gs://bucket/..., s3://bucket/..., or a
                path on a volume that every step mounts at that path (each step runs in a pod of its
                own, which does not see another machine's local disk).
            layout: "tinyimagenet" (wnids.txt, words.txt, train/<wnid>/images/,
                val/val_annotations.txt), "imagenet" (Kaggle's ILSVRC2012: LOC_synset_mapping.txt,
                LOC_val_solution.csv, ILSVRC/Data/CLS-LOC/<split>/), "imagefolder" (train/, val/ or
                validation/, test/, each of class folders or of unlabelled images), "parquet" (a
                Hugging Face download, data/<split>-*.parquet; "parquet:config=NAME" picks a config),
                "webdataset" (tar shards <name>-<split>-NNNN.tar) or "auto" (default): detect it.
            grayscale: "rgb" (default) converts grayscale and CMYK images to RGB; "skip"
                leaves them out, as the 2018 notebook did. Both are counted.
            max_tasks: At most this many conversion tasks (1 to 64, whatever the dataset's
                size); the shards are grouped evenly into them.
            shard_size: Images per val/test shard.
            train_order: "mixed" (default): every train shard mixes the classes (files ordered
                by a stable hash of their path); "per-class": one shard per class, in file order.
            train_shards: Mixed train shards; 0 (default): about 1,000 images each.
            image_size: "HxW" (e.g. "64x64") rejects images of other sizes; "" keeps all.
            max_reject_fraction: Fail the run, after writing the reports, when more than this
                share of inputs is rejected.
            workers: Processes per conversion task; 0 uses every CPU the task's pod is given.
            format: "seed" (default): decoded pixels and the keys listed above; "tf-models": JPEG
                bytes under the keys of tensorflow/models' ImageNet converters; "tfds": a folder
                that tfds.builder_from_directory(output_url) reads.
            label_offset: tf-models: added to every label (1: Model Garden's 1,001 classes).
            jpeg_quality: tf-models and tfds: quality of images encoded anew (clean JPEGs are kept as is).
            take_over_lease: gs:// and s3:// outputs: take over the lease of another run that holds
                output_url, when that run is known to be dead (an expired lease is taken over anyway).
            resize: "WxH" (width first, unlike image_size; e.g. "64x64") makes every image W x H
                (antialiased; images already that size are kept as they are); "" (default) keeps sizes.
            resize_mode: With resize: "squash" (default: the whole image, aspect not kept) or
                "center-crop" (the shorter side to the target, then the centre).
            shorter_side: N scales every image whose shorter side is longer than N down to N, keeping
                the aspect ratio (never enlarged); 0 (default): off. Not with resize.

        Returns:
            dataset: The converted dataset (dataset_info.json, conversion_info.json in the tfds
                format, naming every shard), for
                imagenet_tfrecords.load(dataset, split).
            sizes: sizes.txt, "train,N\\nval,N\\ntest,N".
            metrics: Records, rejects and skipped images per split and in total, and the
                throughput (images/s per worker and over the conversion wall time).
            report: An HTML page (the run's Visualizations): records per split, class
                distribution, sample images decoded from the written TFRecords, rejects.
        """
        # The options enter once, at the plan step, and travel in the plan: the later steps take none.
        plan = parse_metadata(
            data_url=data_url,
            output_url=output_url,
            shard_size=shard_size,
            max_tasks=max_tasks,
            layout=layout,
            train_order=train_order,
            train_shards=train_shards,
            format=format,
            take_over_lease=take_over_lease,
            grayscale=grayscale,
            image_size=image_size,
            resize=resize,
            resize_mode=resize_mode,
            shorter_side=shorter_side,
            label_offset=label_offset,
            jpeg_quality=jpeg_quality,
            workers=workers,
            max_reject_fraction=max_reject_fraction,
        )
        # No step is served from the KFP cache: the cache is keyed on the URL strings, not on the
        # data behind them. A re-run resumes instead: shards whose inputs are unchanged are kept.
        plan.set_caching_options(False)
        _pod(plan, PLAN_CPUS, PLAN_MEMORY, image)
        with dsl.ParallelFor(plan.outputs["Output"], parallelism=parallelism) as number:
            task = convert_shards(plan=plan.outputs["plan"], task=number)
            task.set_caching_options(False)
            if retries:
                task.set_retry(
                    num_retries=RETRIES,
                    backoff_duration=RETRY_BACKOFF,
                    backoff_factor=2,
                    backoff_max_duration=RETRY_WINDOW,
                )
            _pod(task, TASK_CPUS, TASK_MEMORY, image)
        stats = aggregate_stats(plan=plan.outputs["plan"], shards=dsl.Collected(task.outputs["shards"]))
        stats.set_caching_options(False)
        _pod(stats, AGGREGATE_CPUS, AGGREGATE_MEMORY, image)
        return Outputs(
            dataset=stats.outputs["dataset"],
            sizes=stats.outputs["sizes"],
            metrics=stats.outputs["metrics"],
            report=stats.outputs["report"],
        )

    return tinyimagenet_to_tfrecords


tinyimagenet_to_tfrecords = build_pipeline()


def compile_pipeline(path: str, parallelism: int = DEFAULT_PARALLELISM, image: str | None = None) -> None:
    compiler.Compiler().compile(build_pipeline(parallelism, image=image), package_path=path)
