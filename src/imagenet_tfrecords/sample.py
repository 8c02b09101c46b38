"""Write a TinyImageNet-layout dataset of real JPEGs, for demos, tests and benchmarks.

Each class has its own colour and stripe pattern (so a small model can learn it), plus noise.
Every ``gray_every``-th image is a single-channel grayscale JPEG, as ~1.8% of the real
TinyImageNet images are. Noise and JPEG quality are chosen so that files average about 2 KB,
like the real ones (the 248 MB archive holds 120,000 images), which makes their decoding cost
comparable in benchmarks. Output is deterministic for a given seed.
"""

from __future__ import annotations

import os

import numpy as np
import simplejpeg

from . import lock
from .fs import Location
from .output import claim_new, release_new


def _class_base(rng: np.random.Generator, size: int) -> np.ndarray:
    colour = rng.integers(30, 226, size=3)
    period = int(rng.integers(4, 17))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0) * 50 - 25
    return np.clip(colour[None, None, :] + stripes[..., None], 0, 255).astype(np.int16)


def _jpeg(rng: np.random.Generator, base: np.ndarray, gray: bool) -> bytes:
    noise = rng.integers(-8, 9, size=base.shape, dtype=np.int16)
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    if gray:
        g = img.mean(axis=2, keepdims=True).astype(np.uint8)
        return simplejpeg.encode_jpeg(np.ascontiguousarray(g), quality=80, colorspace="GRAY")
    return simplejpeg.encode_jpeg(img, quality=80, colorspace="RGB")


def write_sample(
    output: str,
    *,
    classes: int = 10,
    train_per_class: int = 20,
    val: int = 50,
    test: int = 30,
    size: int = 64,
    gray_every: int = 25,
    seed: int = 0,
) -> dict:
    """Write the dataset under ``output`` (a local directory, new or empty); return the counts written.

    An existing file or a folder that is not empty is refused (BadOutput) before anything is written;
    the folder is taken like an output (output.claim_new, lock.hold) while it is written.
    """
    rng = np.random.default_rng(seed)
    root = Location.of(output)
    if not root.is_local:
        raise ValueError("sample writes to a local directory")
    # The same claim and lock as a conversion's: a new folder's marker (removed when done), made only
    # if none is there, so a conversion started into the same new folder at the same time is refused.
    claim_new(root.url)
    with lock.hold(root.url):
        counts = _write(root, rng, classes, train_per_class, val, test, size, gray_every)
    release_new(root.url)
    return counts


def _write(root: Location, rng, classes: int, train_per_class: int, val: int, test: int, size: int, gray_every: int):
    wnids = [f"n{90000000 + i * 7919:08d}" for i in range(classes)]
    bases = [_class_base(rng, size) for _ in wnids]
    counter = 0

    def write(path: str, cls: int) -> None:
        nonlocal counter
        counter += 1
        gray = gray_every > 0 and counter % gray_every == 0
        with open(path, "wb") as f:
            f.write(_jpeg(rng, bases[cls], gray))

    # wnids.txt is deliberately not sorted, like the real one.
    order = list(rng.permutation(classes))
    root.child("wnids.txt").write_text("".join(f"{wnids[i]}\n" for i in order))
    words = "\n".join(f"{w}\tsample class {i}, synthetic pattern" for i, w in enumerate(wnids))
    root.child("words.txt").write_text(words)  # no final newline, like the real one

    for c, w in enumerate(wnids):
        d = os.path.join(root.path, "train", w, "images")
        os.makedirs(d, exist_ok=True)
        boxes = []
        for n in range(train_per_class):
            name = f"{w}_{n}.JPEG"
            write(os.path.join(d, name), c)
            boxes.append(f"{name}\t0\t0\t{size - 1}\t{size - 1}\n")
        with open(os.path.join(root.path, "train", w, f"{w}_boxes.txt"), "w") as f:
            f.writelines(boxes)

    lines = []
    for split, count in (("val", val), ("test", test)):
        d = os.path.join(root.path, split, "images")
        os.makedirs(d, exist_ok=True)
        for n in range(count):
            c = int(rng.integers(classes))
            write(os.path.join(d, f"{split}_{n}.JPEG"), c)
            if split == "val":
                lines.append(f"{split}_{n}.JPEG\t{wnids[c]}\t0\t0\t{size - 1}\t{size - 1}\n")
    with open(os.path.join(root.path, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines)
    return {"classes": classes, "train": classes * train_per_class, "val": val, "test": test}
