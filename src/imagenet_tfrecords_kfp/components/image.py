"""The container images the components run in, named once from the package version.

Build them from ``images/Dockerfile`` (``make image``, ``make image-tf``) and push them where your cluster
pulls from; compile against them with ``compile --image`` (or ``IMAGENET_TFRECORDS_IMAGE``).

- IMAGE: the conversion steps (parse-metadata, convert-shards, aggregate-stats); no TensorFlow.
- TF_IMAGE: the training example's step (the same, plus TensorFlow); ``IMAGENET_TFRECORDS_TF_IMAGE``, else
  IMAGE's tag + ``-tf`` (as ``make image-tf`` names it; set the variable when IMAGE is a digest).
"""

import os

from imagenet_tfrecords import __version__

DEFAULT_IMAGE = f"ghcr.io/imagenet-tfrecords/imagenet-tfrecords:{__version__}"
IMAGE = os.environ.get("IMAGENET_TFRECORDS_IMAGE", DEFAULT_IMAGE)
DEFAULT_TF_IMAGE = f"{DEFAULT_IMAGE}-tf"
TF_IMAGE = os.environ.get("IMAGENET_TFRECORDS_TF_IMAGE") or (f"{IMAGE}-tf" if "@" not in IMAGE else DEFAULT_TF_IMAGE)
