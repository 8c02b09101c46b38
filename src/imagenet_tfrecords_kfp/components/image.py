"""The container images the components run in, named once from the package version.

Build them from ``images/Dockerfile`` (``make image``, ``make image-tf``) and push them where your cluster
pulls from; compile against them with ``compile --image`` (or ``IMAGENET_TFRECORDS_IMAGE``).

- IMAGE: the conversion steps (parse-metadata, convert-shards, aggregate-stats); no TensorFlow.
- TF_IMAGE: the training example's step (the same, plus TensorFlow); ``IMAGENET_TFRECORDS_TF_IMAGE``, else
  IMAGE's tag + ``-tf`` (as ``make image-tf`` names it; set the variable when IMAGE is a digest).
"""

import os
import re

from imagenet_tfrecords import __version__

# An image reference as Docker's distribution/reference grammar writes it: [domain[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?"
)


def check_reference(text: str) -> str:
    """``text`` if it is an image reference a container runtime accepts (name, tag, digest), else ValueError
    saying what is wrong; sha256 digests have 64 hex digits."""
    m = _REFERENCE.fullmatch(text or "")
    if not m or len(m["name"]) > 255:
        raise ValueError(
            f"{text!r} is not an image reference: [registry/]name[:tag][@sha256:<64 hex digits>], "
            "e.g. registry.example.com/ml/imagenet-tfrecords:0.1.0"
        )
    digest = m["digest"]
    if digest and digest.startswith("sha256:") and len(digest) != len("sha256:") + 64:
        raise ValueError(f"{text!r}: a sha256 digest has 64 hex digits, this one {len(digest) - 7}")
    return text


DEFAULT_IMAGE = f"ghcr.io/imagenet-tfrecords/imagenet-tfrecords:{__version__}"
IMAGE = os.environ.get("IMAGENET_TFRECORDS_IMAGE") or DEFAULT_IMAGE
DEFAULT_TF_IMAGE = f"{DEFAULT_IMAGE}-tf"


def tf_image_of(image: str) -> str:
    """The TensorFlow variant of ``image``: $IMAGENET_TFRECORDS_TF_IMAGE, else its tag + "-tf" (as make image-tf
    names it); a digest has no such variant: the default's, unless the variable names one."""
    return os.environ.get("IMAGENET_TFRECORDS_TF_IMAGE") or (f"{image}-tf" if "@" not in image else DEFAULT_TF_IMAGE)


TF_IMAGE = tf_image_of(IMAGE)
