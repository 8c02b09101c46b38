"""The archive form's listing keeps many range reads in flight: against moto behind a proxy that adds
100 ms to every request, the class tars of a tar of tars are listed many times faster than one after
another, measured in the same test (a ratio, not an absolute time), with tens of requests seen in
flight at once at the proxy."""

from __future__ import annotations

import time
import uuid

import pytest

from imagenet_tfrecords.archive import iter_inner, list_tar
from imagenet_tfrecords.fs import Location

from .latency_proxy import LatencyProxy
from .tars import tar_of
from .test_object_stores import S3Bucket

TARS, MEMBERS, LATENCY = 60, 3, 0.1
SEQUENTIAL_TARS = 6  # listed one after another: the figure the overlap is measured against


def train_tar(classes: int, members: int) -> bytes:
    return tar_of(
        {
            f"n{c:08d}.tar": tar_of({f"n{c:08d}_{i}.JPEG": bytes([c % 256]) * (100 + i) for i in range(members)})
            for c in range(classes)
        }
    )


@pytest.fixture()
def slow_s3(store_env, s3_server):
    """A bucket holding a tar of TARS class tars, and its Location through the latency proxy."""
    import s3fs

    name = f"it-{uuid.uuid4().hex[:12]}"
    S3Bucket(s3_server, name).put("train.tar", train_tar(TARS, MEMBERS))
    with LatencyProxy("127.0.0.1", s3_server.port, LATENCY) as proxy:
        fs = s3fs.S3FileSystem(
            endpoint_url=proxy.url, key=s3_server.key_id, secret=s3_server.secret, skip_instance_cache=True
        )
        yield Location(f"s3://{name}/train.tar", fs, f"{name}/train.tar"), proxy


def test_class_tars_are_listed_with_many_range_reads_in_flight(slow_s3):
    loc, proxy = slow_s3
    tars = list_tar(loc, segment=0)
    assert len(tars) == TARS
    started = time.perf_counter()
    one_by_one = list(iter_inner(loc, tars[:SEQUENTIAL_TARS], group=1))
    sequential = (time.perf_counter() - started) / SEQUENTIAL_TARS
    proxy.reset()
    started = time.perf_counter()
    listed = list(iter_inner(loc, tars, group=100))
    overlapped = (time.perf_counter() - started) / TARS
    assert listed[:SEQUENTIAL_TARS] == one_by_one
    assert [len(members) for _, members in listed] == [MEMBERS] * TARS
    assert listed[7][1][2].name == "n00000007_2.JPEG"
    print(
        f"{TARS} class tars of {MEMBERS} members at {LATENCY * 1e3:.0f} ms a request: {sequential * 1e3:.0f} ms a tar "
        f"one after another, {overlapped * 1e3:.1f} ms a tar overlapped ({sequential / overlapped:.0f}x); "
        f"{proxy.requests} requests, at most {proxy.peak} in flight"
    )
    assert sequential >= (MEMBERS + 1) * LATENCY  # (the proxy's latency is real)
    assert proxy.peak >= TARS // 2, f"at most {proxy.peak} requests in flight"
    assert overlapped < sequential / 5  # (moto, one process on the shared CPUs, serves ~80 requests/s here)
