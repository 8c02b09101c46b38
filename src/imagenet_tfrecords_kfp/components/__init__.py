"""The Kubeflow Pipelines components of imagenet-tfrecords, exported by name; each calls one step function of
``imagenet_tfrecords.tasks``."""

from .aggregate_stats import aggregate_stats
from .convert_shards import convert_shards
from .image import IMAGE, TF_IMAGE
from .load import load
from .parse_metadata import parse_metadata

__all__ = ["IMAGE", "TF_IMAGE", "aggregate_stats", "convert_shards", "load", "parse_metadata"]
