"""Pipelines of imagenet-tfrecords and their compiled YAML."""

from pathlib import Path

COMPILED = Path(__file__).with_name("tinyimagenet_to_tfrecords.yaml")
