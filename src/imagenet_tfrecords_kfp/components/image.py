"""The one container image every component runs in.

Build it from ``images/Dockerfile`` (``make image``) and push it where your cluster pulls from;
set ``IMAGENET_TFRECORDS_IMAGE`` when compiling to use another name.
"""

import os

from imagenet_tfrecords import __version__

DEFAULT_IMAGE = f"ghcr.io/imagenet-tfrecords/imagenet-tfrecords:{__version__}"
IMAGE = os.environ.get("IMAGENET_TFRECORDS_IMAGE", DEFAULT_IMAGE)
