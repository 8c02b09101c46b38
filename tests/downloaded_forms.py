"""One small dataset written three ways, by the libraries that write them in the wild: class folders,
parquet files by Hugging Face ``datasets`` (Image and ClassLabel features, the Hub's file names) and
WebDataset shards by ``webdataset``'s TarWriter."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["bird", "cat", "dog"]  # sorted: the class folders' labels and the ClassLabel's order agree
# (split, class or None, Pillow mode, format) of each picture
PICTURES = [
    ("train", "bird", "RGB", "JPEG"),
    ("train", "bird", "L", "PNG"),
    ("train", "cat", "RGB", "PNG"),
    ("train", "cat", "RGB", "JPEG"),
    ("train", "cat", "RGB", "WEBP"),
    ("train", "dog", "RGB", "JPEG"),
    ("train", "dog", "L", "JPEG"),
    ("train", "dog", "RGBA", "PNG"),
    ("train", "bird", "RGB", "JPEG"),
    ("train", "dog", "RGB", "PNG"),
    ("val", "cat", "RGB", "JPEG"),
    ("val", "dog", "RGB", "PNG"),
    ("val", "bird", "RGB", "JPEG"),
    ("test", None, "RGB", "JPEG"),
    ("test", None, "L", "PNG"),
]
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def picture(n: int, mode: str, fmt: str) -> bytes:
    rng = np.random.default_rng(n)
    h, w = 10 + n, 16 + 2 * n
    img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def pictures() -> list[tuple[str, str | None, str, bytes]]:
    """(split, class, file name, bytes) of every picture."""
    return [
        (split, cls, f"p{n:02d}.{EXT[fmt]}", picture(n, mode, fmt))
        for n, (split, cls, mode, fmt) in enumerate(PICTURES)
    ]


def write_folders(root: Path) -> Path:
    for split, cls, name, data in pictures():
        folder = root / split / cls if cls else root / split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return root


def write_parquet(root: Path, files_per_split: int = 2, row_group: int = 2) -> Path:
    """The Hub's layout: data/<split>-NNNNN-of-MMMMM.parquet (val as "validation"), each split in
    ``files_per_split`` files of row groups of ``row_group`` rows (as datasets' push_to_hub does)."""
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as HfImage

    features = Features({"image": HfImage(), "label": ClassLabel(names=CLASSES), "name": Value("string")})
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, hub in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = [(cls, name, data) for s, cls, name, data in pictures() if s == split]
        ds = Dataset.from_dict(
            {
                "image": [{"bytes": data, "path": name} for _, name, data in rows],
                "label": [CLASSES.index(cls) if cls else -1 for cls, _, _ in rows],
                "name": [name for _, name, _ in rows],
            },
            features=features,
        )
        for i in range(files_per_split):
            part = ds.shard(files_per_split, i, contiguous=True)
            part.to_parquet(
                str(root / "data" / f"{hub}-{i:05d}-of-{files_per_split:05d}.parquet"), batch_size=row_group
            )
    (root / "README.md").write_text("---\ndataset_info:\n  features: []\n---\n")
    return root


def write_webdataset(root: Path, per_shard: int = 4, classes_file: bool = True) -> Path:
    """imagenet1k-style shards, <name>-<split>-NNNN.tar, by webdataset's ShardWriter; the label as
    ``cls`` in train, in the ``json`` in val; the test samples have neither."""
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    for split, hub in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = [(cls, name, data) for s, cls, name, data in pictures() if s == split]
        pattern = str(root / f"tiny-{hub}-%04d.tar")
        with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
            for cls, name, data in rows:
                stem, ext = name.split(".")
                sample = {"__key__": stem, ext: data}
                if cls and split == "train":
                    sample["cls"] = CLASSES.index(cls)
                elif cls:
                    sample["json"] = {"label": CLASSES.index(cls), "name": name}
                sink.write(sample)
    if classes_file:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    return root
