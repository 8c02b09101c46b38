"""The compiled YAML of a step, or of the whole pipeline, loaded as a component that runs in an image of one's own."""

from __future__ import annotations

import os
import tempfile

import yaml
from kfp import components

from .image import check_reference


def load(path: str, image: str | None = None):
    """``kfp.components.load_component_from_file(path)``, with every step's container image set to
    ``image`` (checked: ValueError for a reference that is not one). For components/*.yaml and for
    pipelines/tinyimagenet_to_tfrecords.yaml alike: a pipeline loaded as a component keeps its steps'
    images, which ``PipelineTask.set_container_image`` does not reach."""
    if not image:
        return components.load_component_from_file(path)
    check_reference(image)
    with open(path) as f:
        spec = yaml.safe_load(f)
    for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
        if "container" in executor:
            executor["container"]["image"] = image
    fd, tmp = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(spec, f, sort_keys=False)
        return components.load_component_from_file(tmp)
    finally:
        os.unlink(tmp)
