"""The archive form's listing of 1,000 class tars against moto behind a proxy that adds a fixed latency
to every request (tests/latency_proxy.py): seconds, requests and the most requests in flight, for this
checkout's code and for another checkout's (``--before SRC``, e.g. the main branch's ``src``), at 30 ms
and 100 ms a request.

    PYTHONPATH=src .venv/bin/python benchmarks/archive_latency.py [--before /path/to/main/src]
        [--members 1] [--json benchmarks/results/archive_latency.json]

A tar of 1,000 class tars of ``--members`` tiny members each is written to moto; each code lists the
class tars' members (archive.iter_inner over the outer tar's members, with the imagenet layout's
group: what the plan step does after listing the outer tar) in a fresh process through the proxy.
The outer tar's 1,001 headers are one chain of reads whatever the code (1,001 latencies): they are
read without the proxy and not timed; a chain's cost a read is the "one after another" figure (20
class tars listed one by one through the proxy, per tar: members + 1 reads). moto is
one Python process on the 2 shared cores: its own rate (measured with no latency) bounds every
figure here, so the listing at full ImageNet size (1.28 M headers) is modelled in cost_model.py
from these figures, not run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.latency_proxy import LatencyProxy  # noqa: E402
from tests.servers import moto_s3  # noqa: E402
from tests.tars import tar_of  # noqa: E402

CLASSES = 1000
LATENCIES = (0.030, 0.100)

_CHILD = """
import json, sys, time
import s3fs
from imagenet_tfrecords.archive import RangeReader, iter_inner, list_tar
from imagenet_tfrecords.fs import Location
from imagenet_tfrecords.layouts import imagenet_archive
url, direct, bucket, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def at(endpoint):
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="k", secret="s", skip_instance_cache=True)
    return Location(f"s3://{bucket}/train.tar", fs, f"{bucket}/train.tar")
tars = list_tar(at(direct), segment=0)  # (the outer headers: one chain whatever the code, not timed)
loc = at(url)
group = imagenet_archive.group(loc) if hasattr(imagenet_archive, "group") else imagenet_archive.GROUP
if limit:
    t = time.perf_counter()
    tars = tars[:limit]
    list(iter_inner(loc, tars, 1))
    print(json.dumps({"seconds": time.perf_counter() - t}))
    sys.exit()
print("listed", flush=True)
sys.stdin.readline()  # (the parent resets the proxy's counts)
t = time.perf_counter()
listed = list(iter_inner(loc, tars, group))
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "tars": len(listed), "members": sum(len(m) for _, m in listed), "group": group}))
"""


def _env(src: str) -> dict:
    return {**os.environ, "PYTHONPATH": src, "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1"}


def _inner(src: str, proxy: LatencyProxy, direct: str, bucket: str) -> dict:
    """The class tars listed by the code at ``src`` in a fresh process through ``proxy``."""
    p = subprocess.Popen(
        [sys.executable, "-c", _CHILD, proxy.url, direct, bucket, "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(src),
    )
    assert p.stdout.readline().strip() == "listed"
    proxy.reset()
    p.stdin.write("\n")
    p.stdin.flush()
    out = json.loads(p.stdout.readline())
    p.wait(60)
    requests = proxy.requests
    return out | {
        "seconds": round(out["seconds"], 2),
        "requests": requests,
        "peak_in_flight": proxy.peak,
        "requests_per_s": round(requests / out["seconds"]),
        "overlap": round(requests * proxy.latency / out["seconds"], 1),  # requests in flight on average
    }


def measure(members: int, before: str | None) -> dict:
    import boto3

    src = str(ROOT / "src")
    figures: dict = {"classes": CLASSES, "members_per_class": members}
    with tempfile.TemporaryDirectory() as logs:
        server = moto_s3(Path(logs))
        try:
            client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                                  aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            client.create_bucket(Bucket=bucket)
            classes = {
                f"n{c:08d}.tar": tar_of({f"n{c:08d}_{i}.JPEG": bytes(200) for i in range(members)})
                for c in range(CLASSES)
            }
            client.put_object(Bucket=bucket, Key="train.tar", Body=tar_of(classes))
            # moto's own rate: 2,000 small range reads, 64 at a time, no latency added
            with LatencyProxy("127.0.0.1", server.port, 0.0) as proxy:
                got = _inner(src, proxy, server.url, bucket)
                figures["moto_requests_per_s_no_latency"] = got["requests_per_s"]
            for latency in LATENCIES:
                row: dict = {}
                with LatencyProxy("127.0.0.1", server.port, latency) as proxy:
                    t = subprocess.run(
                        [sys.executable, "-c", _CHILD, proxy.url, server.url, bucket, "20"],
                        capture_output=True, text=True, env=_env(src), check=True,
                    )  # fmt: skip
                    row["one_after_another_s_per_tar"] = round(json.loads(t.stdout)["seconds"] / 20, 3)
                    row["after"] = _inner(src, proxy, server.url, bucket)
                    if before:
                        row["before"] = _inner(before, proxy, server.url, bucket)
                figures[f"{round(latency * 1000)}ms"] = row
                print(json.dumps({f"{round(latency * 1000)}ms": row}), flush=True)
        finally:
            server.stop()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", help="the src folder of the code to compare with (e.g. the main branch's)")
    p.add_argument("--members", type=int, default=1, help="members of each class tar")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    started = time.perf_counter()
    figures = measure(args.members, args.before)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
