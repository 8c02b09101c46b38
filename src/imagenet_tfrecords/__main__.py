"""python -m imagenet_tfrecords: the imagenet-tfrecords command line."""

import sys

from .cli import main

sys.exit(main())
