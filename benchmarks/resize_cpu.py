"""CPU time per image of resizing, in one process, and the records' bytes of a resized ImageNet-sized set.

    python benchmarks/resize_cpu.py                   # CPU per image on 300 of the 400x350 JPEGs, 5 rounds
    python benchmarks/resize_cpu.py --bytes 10000     # and the bytes of 10,000 of them at three settings

CPU time (``time.process_time``) rather than wall time: on a machine other work shares, CPU time of one
process is disturbed less (cache and frequency effects remain; the median of the rounds is kept). Per image:

- full decode: ``image.decode`` at full size (the decode-only bound's work);
- scaled decode + resize: ``image.decode`` with ``--resize 64x64`` (libjpeg-turbo's DCT-scaled decode,
  then the resize), and the scaled decode alone;
- whole pipeline: ``convert.convert_shard`` over the images' shards (read, decode, resize, frame,
  write, publish), full size and ``--resize 64x64`` (seed format) and ``--resize 64x64 --format tf-models``.

The target: ``convert --resize 64x64`` at least as fast as the decode alone at full size, i.e.
full decode / whole pipeline at 64x64 >= 1. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time

from data import OUT, large_dataset, shard_jobs, train_files


def _per_image_us(fn, items, rounds: int) -> float:
    """Median over ``rounds`` of the CPU microseconds per item of ``fn`` over ``items``."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for item in items:
            fn(item)
        times.append((time.process_time() - started) / len(items) * 1e6)
    return round(statistics.median(times), 1)


def _pipeline_us(data, rounds: int, **options) -> tuple[float, float]:
    """(median CPU us per image of convert_shard over ``data`` with these options, record bytes per image)."""
    from imagenet_tfrecords.convert import convert_shard

    times, out = [], OUT / "resize-cpu"
    for _ in range(rounds):
        shutil.rmtree(out, ignore_errors=True)
        jobs = shard_jobs(data, out, **options)
        started = time.process_time()
        stats = [convert_shard(job, i, text) for job, i, text in jobs]
        records = sum(s["records"] for s in stats)
        times.append((time.process_time() - started) / records * 1e6)
    shutil.rmtree(out, ignore_errors=True)
    return round(statistics.median(times), 1), round(sum(s["bytes"] for s in stats) / records, 1)


def cpu_per_image(images: int, rounds: int) -> dict:
    import simplejpeg

    from imagenet_tfrecords.image import Resize, decode

    data = large_dataset(images)  # the first ``images`` of the benchmark's 400x350 set
    blobs = [p.read_bytes() for p in train_files(data)]
    small = Resize(64, 64)
    got = {
        "images": len(blobs),
        "rounds": rounds,
        "mean_jpeg_kb": round(sum(map(len, blobs)) / len(blobs) / 1000, 1),
        "full_decode_us": _per_image_us(decode, blobs, rounds),
        "scaled_decode_only_us": _per_image_us(
            lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB", min_height=88, min_width=100), blobs, rounds
        ),
        "scaled_decode_and_resize_us": _per_image_us(lambda b: decode(b, resize=small), blobs, rounds),
    }
    for name, options in {
        "pipeline_full_size": {},
        "pipeline_64x64": {"resize": "64x64"},
        "pipeline_64x64_tf_models": {"resize": "64x64", "format": "tf-models"},
    }.items():
        got[f"{name}_us"], got[f"{name}_record_bytes"] = _pipeline_us(data, rounds, **options)
    got["full_decode_over_pipeline_64x64"] = round(got["full_decode_us"] / got["pipeline_64x64_us"], 3)
    got["full_decode_over_pipeline_64x64_tf_models"] = round(
        got["full_decode_us"] / got["pipeline_64x64_tf_models_us"], 3
    )
    return got


def output_bytes(images: int) -> dict:
    """Records' bytes of ``images`` generated 400x350 JPEGs converted at full size, 64x64 and shorter side 256,
    in the seed and tf-models formats (one conversion each, every CPU)."""
    from imagenet_tfrecords.convert import Options
    from imagenet_tfrecords.tasks import convert_dataset

    data = large_dataset(images)
    got = {"images": images, "jpeg_bytes": sum(p.stat().st_size for p in train_files(data))}
    for fmt in ("seed", "tf-models"):
        for name, options in {
            "full size": {},
            "64x64": {"resize": "64x64"},
            "shorter side 256": {"shorter_side": 256},
        }.items():
            out = OUT / "resize-bytes"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            _, info = convert_dataset(str(data), str(out), Options(format=fmt, **options))
            got[f"{fmt}, {name}"] = {
                "bytes": sum(s["num_bytes"] for s in info["splits"].values()),
                "records": sum(s["num_records"] for s in info["splits"].values()),
                "wall_s": round(time.perf_counter() - started, 1),
            }
            shutil.rmtree(out, ignore_errors=True)
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=300, help="images timed per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the median is kept")
    p.add_argument("--bytes", type=int, default=0, metavar="N", help="also convert N generated images (0: not)")
    p.add_argument("--skip-cpu", action="store_true", help="only the bytes")
    args = p.parse_args(argv)
    result = {}
    if not args.skip_cpu:
        result["cpu_per_image"] = cpu_per_image(args.images, args.rounds)
    if args.bytes:
        result["output_bytes"] = output_bytes(args.bytes)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
