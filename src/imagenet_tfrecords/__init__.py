"""Turn image datasets (TinyImageNet, ImageNet, class folders, Hugging Face parquet, WebDataset) into TFRecords.

The core library; it never imports kfp.
"""

__version__ = "0.2.0"


def load(source, split: str, **kwargs):
    """tf.data reader of a converted split; see imagenet_tfrecords.reader.load."""
    from .reader import load as _load

    return _load(source, split, **kwargs)
