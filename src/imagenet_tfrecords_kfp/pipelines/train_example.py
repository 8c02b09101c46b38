"""Example: the compiled conversion pipeline as one step, then a short Keras training step on its output.

The conversion step is the compiled conversion pipeline loaded from its YAML with
``kfp.components.load_component_from_file`` (by default the checkout's
``pipelines/tinyimagenet_to_tfrecords.yaml``), so this pipeline depends on the published pipeline
definition, not on its Python source. Its ``dataset`` output (a Dataset artifact holding
dataset_info.json, whose "root" is the output URL of the shards) feeds ``train_small_model``,
which reads the train split with ``imagenet_tfrecords.load`` and fits a few Keras layers for one
epoch. Compile it with ``python -m imagenet_tfrecords_kfp.pipelines.train_example out.yaml``.
"""

import os
from typing import NamedTuple

from kfp import compiler, components, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from ..compile import COMPILED
from ..components import IMAGE, load
from ..components.image import tf_image_of

PIPELINE_NAME = "tinyimagenet-train-example"
TRAIN_CPUS = "2"
TRAIN_MEMORY = "4Gi"


def load_conversion(path: str = str(COMPILED), image: str | None = None):
    """The conversion pipeline, loaded from its compiled YAML as a component; ``image``: its steps' image."""
    return load(path, image) if image else components.load_component_from_file(path)


@dsl.component(base_image=tf_image_of(IMAGE), install_kfp_package=False)
def train_small_model(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    batch_size: int = 32,
    learning_rate: float = 0.01,
    max_batches: int = 0,
    seed: int = 0,
):
    """Fit a few Keras layers for one epoch over the train split and record the per-batch loss.

    Args:
        dataset: The conversion's Dataset artifact; read with imagenet_tfrecords.load(dataset, "train").
        model: Output. A folder with model.keras and losses.json (the loss of every batch).
        metrics: Output. batches, examples, the loss of the first and last batch, and the mean
            loss of the first and last quarter of the epoch (at most 20 batches each).
        batch_size: Images per batch.
        learning_rate: Adam learning rate.
        max_batches: Stop after this many batches; 0 runs the whole epoch.
        seed: Seeds Keras and the reader's shuffle.
    """
    import json
    import math
    import os

    import keras

    import imagenet_tfrecords
    from imagenet_tfrecords.reader import dataset_info

    batch_size, max_batches, seed = int(batch_size), int(max_batches), int(seed)  # kfp.local passes floats
    info, _ = dataset_info(dataset)
    num_classes = int(info["num_classes"])
    keras.utils.set_random_seed(seed)
    ds = imagenet_tfrecords.load(dataset, "train", seed=seed).batch(batch_size).prefetch(2)
    if max_batches > 0:
        ds = ds.take(max_batches)
    height, width, _ = ds.element_spec[0].shape[1:]

    layers = keras.layers
    net = keras.Sequential(
        [
            keras.Input((height, width, 3)),
            layers.Rescaling(1 / 127.5, offset=-1.0),  # uint8 -> [-1, 1]
            layers.Conv2D(16, 5, strides=4, activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(num_classes),
        ]
    )
    net.compile(
        optimizer=keras.optimizers.Adam(float(learning_rate)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # train_on_batch returns that batch's loss (fit's callbacks see a running mean instead).
    losses, examples = [], 0
    for images, labels in ds:
        losses.append(float(net.train_on_batch(images, labels)))
        examples += int(images.shape[0])
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss of batch {len(losses) - 1} is {losses[-1]}")
    if not losses:
        raise ValueError("the train split has no records")

    os.makedirs(model.path, exist_ok=True)
    net.save(os.path.join(model.path, "model.keras"))
    with open(os.path.join(model.path, "losses.json"), "w") as f:
        json.dump(losses, f)
    model.metadata.update({"framework": "keras", "num_classes": num_classes, "input_shape": [height, width, 3]})

    k = max(1, min(20, len(losses) // 4))
    metrics.log_metric("batches", len(losses))
    metrics.log_metric("examples", examples)
    metrics.log_metric("loss_first_batch", losses[0])
    metrics.log_metric("loss_last_batch", losses[-1])
    metrics.log_metric("loss_start_mean", sum(losses[:k]) / k)
    metrics.log_metric("loss_end_mean", sum(losses[-k:]) / k)


class Outputs(NamedTuple):
    dataset: Dataset
    model: Model
    metrics: Metrics


def build_pipeline(conversion_yaml: str = str(COMPILED), image: str | None = None, train_image: str | None = None):
    """The example over the conversion compiled in ``conversion_yaml``. ``image``: the conversion steps'
    image (default: $IMAGENET_TFRECORDS_IMAGE, else the YAML's own); ``train_image``: the training step's
    (default: ``image``'s TensorFlow variant, ``make image-tf``: $IMAGENET_TFRECORDS_TF_IMAGE, else its tag
    + "-tf")."""
    image = image or (IMAGE if os.environ.get("IMAGENET_TFRECORDS_IMAGE") else None)
    conversion = load_conversion(conversion_yaml, image)
    train_image = train_image or tf_image_of(image or IMAGE)

    @dsl.pipeline(name=PIPELINE_NAME)
    def tinyimagenet_train_example(
        data_url: str,
        output_url: str,
        max_tasks: int = 4,
        workers: int = 0,
        batch_size: int = 32,
        learning_rate: float = 0.01,
        max_batches: int = 0,
    ) -> Outputs:
        """Convert a TinyImageNet-layout dataset to TFRecords, then train a small Keras model on it.

        Args:
            data_url: Root of the TinyImageNet-layout dataset (local path, gs://, s3://).
            output_url: Where the conversion writes the TFRecords and reports.
            max_tasks: At most this many conversion tasks.
            workers: Processes per conversion task (0: every CPU of the task).
            batch_size: Training batch size.
            learning_rate: Adam learning rate.
            max_batches: Stop training after this many batches (0: one full epoch).

        Returns:
            dataset: The converted dataset.
            model: The trained model (model.keras) and the per-batch losses (losses.json).
            metrics: The loss at the start and end of the epoch.
        """
        converted = conversion(data_url=data_url, output_url=output_url, max_tasks=max_tasks, workers=workers)
        train = train_small_model(
            dataset=converted.outputs["dataset"],
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_batches=max_batches,
        )
        train.set_cpu_request(TRAIN_CPUS).set_cpu_limit(TRAIN_CPUS)
        train.set_memory_request(TRAIN_MEMORY).set_memory_limit(TRAIN_MEMORY)
        train.set_container_image(train_image)
        return Outputs(
            dataset=converted.outputs["dataset"], model=train.outputs["model"], metrics=train.outputs["metrics"]
        )

    return tinyimagenet_train_example


def compile_pipeline(path: str, image: str | None = None, train_image: str | None = None) -> None:
    compiler.Compiler().compile(build_pipeline(image=image, train_image=train_image), package_path=path)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Compile the training example.")
    parser.add_argument("output", nargs="?", default="tinyimagenet_train_example.yaml")
    parser.add_argument("--image", help="the conversion steps' image (default: $IMAGENET_TFRECORDS_IMAGE)")
    parser.add_argument("--train-image", help="the training step's image (default: --image's TensorFlow variant)")
    args = parser.parse_args()
    compile_pipeline(args.output, args.image, args.train_image)
    print(f"wrote {args.output}")
