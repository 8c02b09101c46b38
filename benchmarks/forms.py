"""The benchmark's pictures in the three forms people download: class folders, Hugging Face parquet,
WebDataset shards; the same JPEG bytes in each (the train and val images of a TinyImageNet-layout
data set), so that converting them differs only in how the inputs are read.

    python benchmarks/forms.py DATA OUT    # writes OUT/folders, OUT/parquet, OUT/webdataset

Parquet: ``data/<split>-NNNNN-of-MMMMM.parquet`` of about 1,000 rows, row groups of 100 (what
``datasets`` writes for images), the Image and ClassLabel features recorded as ``datasets`` records
them. WebDataset: ``bench-<split>-NNNN.tar`` of 1,000 samples (``jpg`` + ``cls``) and classes.txt.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from pathlib import Path

ROWS_PER_FILE = 1000
ROW_GROUP = 100


def pictures(data: Path) -> dict[str, list[tuple[str, int, Path]]]:
    """(name, label, path) of the train and val images of a TinyImageNet-layout folder, labels by sorted wnid."""
    wnids = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    label = {w: i for i, w in enumerate(wnids)}
    train = [(p.name, label[w], p) for w in wnids for p in sorted((data / "train" / w / "images").iterdir())]
    val = []
    for line in (data / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        val.append((name, label[wnid], data / "val" / "images" / name))
    return {"train": train, "val": val, "_classes": wnids}


def write_forms(data: Path, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    got = pictures(data)
    classes = got.pop("_classes")
    folders, parquet, wds = out / "folders", out / "parquet", out / "webdataset"
    for split, rows in got.items():
        for name, label, path in rows:
            dest = folders / split / classes[label] / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                os.link(path, dest)
        files = -(-len(rows) // ROWS_PER_FILE)
        hub = "validation" if split == "val" else split
        (parquet / "data").mkdir(parents=True, exist_ok=True)
        wds.mkdir(parents=True, exist_ok=True)
        features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": classes}}
        meta = {"huggingface": json.dumps({"info": {"features": features}})}
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        for i in range(files):
            part = rows[i * ROWS_PER_FILE : (i + 1) * ROWS_PER_FILE]
            images = pa.array([{"bytes": p.read_bytes(), "path": n} for n, _, p in part], image_type)
            table = pa.table({"image": images, "label": pa.array([lb for _, lb, _ in part], pa.int64())})
            target = parquet / "data" / f"{hub}-{i:05d}-of-{files:05d}.parquet"
            pq.write_table(table.replace_schema_metadata(meta), target, row_group_size=ROW_GROUP)
            with tarfile.open(wds / f"bench-{hub}-{i:04d}.tar", "w") as tar:
                for n, lb, p in part:
                    stem = n.rsplit(".", 1)[0]
                    for member, content in ((f"{stem}.jpg", p.read_bytes()), (f"{stem}.cls", str(lb).encode())):
                        info = tarfile.TarInfo(member)
                        info.size = len(content)
                        tar.addfile(info, io.BytesIO(content))
    (wds / "classes.txt").write_text("".join(f"{c}\n" for c in classes))


if __name__ == "__main__":
    write_forms(Path(sys.argv[1]), Path(sys.argv[2]))
