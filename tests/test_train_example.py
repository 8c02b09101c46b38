"""The example pipeline: the compiled conversion YAML as a step, then a short Keras training step."""

import json
import math

import numpy as np
import pytest
import yaml

import imagenet_tfrecords
from imagenet_tfrecords.reader import verify
from imagenet_tfrecords_kfp.compile import COMPILED
from imagenet_tfrecords_kfp.components import IMAGE, TF_IMAGE
from imagenet_tfrecords_kfp.pipelines.train_example import PIPELINE_NAME, build_pipeline, compile_pipeline

BATCH = 4
FEW = 4  # batches averaged at each end of the epoch


@pytest.fixture(scope="module")
def run(sample_dir, tmp_path_factory):
    """One local run of the example through kfp.local on the sample (6 classes x 12 train images)."""
    from kfp import local

    tmp = tmp_path_factory.mktemp("train-example")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp / "root"), raise_on_error=True)
    task = build_pipeline()(
        data_url=str(sample_dir), output_url=str(tmp / "out"), max_tasks=3, workers=1, batch_size=BATCH
    )
    return task, tmp / "out"


@pytest.mark.slow
def test_training_step_learns_from_the_converted_dataset(run):
    task, _ = run
    model, metrics = task.outputs["model"], task.outputs["metrics"]
    with open(f"{model.path}/losses.json") as f:
        losses = json.load(f)
    assert len(losses) == math.ceil(6 * 12 / BATCH)  # one epoch over the train split
    assert all(math.isfinite(v) for v in losses)
    start, end = np.mean(losses[:FEW]), np.mean(losses[-FEW:])
    assert end < start, losses
    m = metrics.metadata
    assert m["batches"] == len(losses) and m["examples"] == 6 * 12
    assert m["loss_first_batch"] == pytest.approx(losses[0]) and m["loss_last_batch"] == pytest.approx(losses[-1])
    assert m["loss_end_mean"] < m["loss_start_mean"]
    assert model.metadata["num_classes"] == 6 and model.metadata["framework"] == "keras"


@pytest.mark.slow
def test_trained_model_exists_and_beats_chance_on_val(run):
    import keras

    task, _ = run
    net = keras.saving.load_model(f"{task.outputs['model'].path}/model.keras")
    val = imagenet_tfrecords.load(task.outputs["dataset"], "val", shuffle=False).batch(64)
    right = total = 0
    for images, labels in val:
        right += int(np.sum(np.argmax(net.predict(images, verbose=0), axis=1) == labels.numpy()))
        total += int(labels.shape[0])
    assert total == 30
    assert right / total > 0.5, f"{right} of {total} right (chance is 1/6)"


@pytest.mark.slow
def test_conversion_step_output_is_complete(run):
    task, out = run
    assert verify(str(out)) == {"train": 72, "val": 30, "test": 20}
    assert task.outputs["dataset"].metadata["root"] == str(out)


def test_compiled_structure(tmp_path):
    path = tmp_path / "example.yaml"
    compile_pipeline(str(path))
    spec = yaml.safe_load(path.read_text())
    conversion = yaml.safe_load(COMPILED.read_text())
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME

    # the conversion pipeline is one sub-DAG component, identical to the compiled YAML's root
    sub = spec["components"]["comp-tinyimagenet-to-tfrecords"]
    assert sub == conversion["root"]
    assert set(sub["dag"]["tasks"]) == {"parse-metadata", "for-loop-1", "aggregate-stats"}
    assert sub["dag"]["outputs"]["artifacts"]["dataset"]["artifactSelectors"] == [
        {"outputArtifactKey": "dataset", "producerSubtask": "aggregate-stats"}
    ]
    for name, component in conversion["components"].items():
        assert spec["components"][name] == component
    for name, executor in conversion["deploymentSpec"]["executors"].items():
        assert spec["deploymentSpec"]["executors"][name] == executor

    # two steps: the conversion, then training on its dataset output
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"tinyimagenet-to-tfrecords", "train-small-model"}
    assert tasks["tinyimagenet-to-tfrecords"]["componentRef"]["name"] == "comp-tinyimagenet-to-tfrecords"
    assert tasks["train-small-model"]["inputs"]["artifacts"]["dataset"] == {
        "taskOutputArtifact": {"outputArtifactKey": "dataset", "producerTask": "tinyimagenet-to-tfrecords"}
    }
    assert set(spec["components"]["comp-train-small-model"]["outputDefinitions"]["artifacts"]) == {"model", "metrics"}

    # the conversion steps run in the conversion image, training in its TensorFlow variant; neither installs kfp
    executors = spec["deploymentSpec"]["executors"]
    images = {name: e["container"]["image"] for name, e in executors.items()}
    assert images.pop("exec-train-small-model") == TF_IMAGE != IMAGE
    assert set(images.values()) == {IMAGE}
    command = " ".join(executors["exec-train-small-model"]["container"]["command"])
    assert "pip install" not in command and "kfp==" not in command
