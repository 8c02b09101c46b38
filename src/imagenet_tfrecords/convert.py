"""Convert planned shards to TFRecord files, one process per shard in a pool.

A worker streams its shard: read a file, decode it, append the framed record to a local
temporary file, move on. Memory stays flat whatever the size of a class directory. The
finished file is published atomically (see fs.publish: streamed to object stores, made visible
only while the run still holds the output), then its index (``<shard file>.idx``,
one "offset length" line per record, made from the framing as it is written), then a small JSON
record of the shard's statistics under ``_work/``, with the SHA-256 of the shard (taken from the
bytes as they are written) and of its index. A re-run finds that record, checks the shard against
its recorded size, record count, CRC32C checksums and SHA-256 (another shard copied over it, even of
the same size, is not the one recorded), its index against its recorded size and SHA-256, and that
it was made from the same input files (names, sizes, change stamps), plan entry and options, and
skips it; anything else is converted again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from functools import cached_property

from . import boxes, formats, recordio, records
from .fs import Location, LostOutput, fence, fence_of, publish
from .image import DEFAULT_MAX_PIXELS, RESIZE_MODES, SQUASH, BadImage, Resize, check_sizes, resize_of
from .output import WORK_DIR
from .plan import Plan, PlanError, Shard
from .procs import (
    WorkerDied,
    available_cpus,
    check_terminated,
    first_done,
    keep_freed_memory,
    stop_pool,
    worker_init,
)
from .sources import Unusable, read_sources

GRAYSCALE_POLICIES = ("rgb", "skip")


@dataclass(frozen=True)
class Options:
    """How images become records.

    grayscale: "rgb" converts grayscale and CMYK images to 3-channel RGB; "skip" leaves out
        every image that was not 3-channel RGB (what the 2018 notebook did), counted as skipped.
    max_pixels: images whose header declares more pixels are rejected before decoding.
    image_size: "HxW" to reject images of any other size; "" accepts every size.
    format: the record format (formats.FORMATS): "seed", "tf-models" or "tfds".
    label_offset: added to every label of tf-models records (1: the 1,001 classes of Model Garden and slim).
    jpeg_quality: of the images tf-models and tfds encode anew (all but clean JPEGs).
    resize: "WxH" (width first, as image tools write it; unlike image_size) makes every image W x H;
        "" keeps each image's own size.
    resize_mode: with resize: "squash" (the whole image, aspect not kept) or "center-crop" (the
        shorter side scaled to the target, then the centre).
    shorter_side: N scales every image whose shorter side is longer than N down to N, keeping the
        aspect ratio (never enlarges); 0: off. Not with resize.
    """

    grayscale: str = "rgb"
    max_pixels: int = DEFAULT_MAX_PIXELS
    image_size: str = ""
    format: str = formats.SEED
    label_offset: int = 0
    jpeg_quality: int = formats.DEFAULT_JPEG_QUALITY
    resize: str = ""
    resize_mode: str = SQUASH
    shorter_side: int = 0

    def __post_init__(self):
        if self.grayscale not in GRAYSCALE_POLICIES:
            raise ValueError(f"grayscale policy must be one of {GRAYSCALE_POLICIES}, got {self.grayscale!r}")
        if self.image_size and not parse_size(self.image_size):
            raise ValueError(f"image_size must look like 64x64, got {self.image_size!r}")
        if self.format not in formats.FORMATS:
            raise ValueError(f"format must be one of {formats.FORMATS}, got {self.format!r}")
        if self.label_offset and self.format != formats.TF_MODELS:
            raise ValueError(f"label_offset applies to the tf-models format only, not {self.format!r}")
        if not 0 <= self.label_offset <= 1000:
            raise ValueError(f"label_offset must be from 0 to 1000, got {self.label_offset}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be from 1 to 100, got {self.jpeg_quality}")
        if self.resize and not parse_size(self.resize):
            raise ValueError(f"resize must be WIDTHxHEIGHT such as 64x64, got {self.resize!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.resize_mode != SQUASH and not self.resize:
            raise ValueError(f"resize_mode {self.resize_mode!r} applies with resize only")
        if self.shorter_side < 0:
            raise ValueError(f"shorter_side must be 0 (off) or more, got {self.shorter_side}")
        if self.resize and self.shorter_side:
            raise ValueError("resize and shorter_side do not go together: give one of them")
        check_sizes(parse_size(self.resize), parse_size(self.image_size), self.shorter_side, self.max_pixels)

    def resizing(self) -> Resize | None:
        """What size images become (image.Resize), or None: each keeps its own."""
        return resize_of(asdict(self))

    def fingerprint(self) -> dict:
        """The options a shard's content depends on (the seed format's as before formats existed;
        the resize options only when they resize, so outputs made before them still resume)."""
        out = asdict(self)
        if self.format == formats.SEED:
            for name in ("format", "label_offset", "jpeg_quality"):
                del out[name]
        if not self.resize:
            del out["resize"], out["resize_mode"]
        if not self.shorter_side:
            del out["shorter_side"]
        return out


def parse_size(text: str) -> tuple[int, int] | None:
    """The two numbers of "AxB" with both at least 1 (image_size's (height, width); resize's
    (width, height)), else None."""
    h, x, w = text.lower().partition("x")
    ok = x and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0
    return (int(h), int(w)) if ok else None


def stats_location(out: Location, file: str) -> Location:
    """Where the statistics of the shard written to ``file`` are: ``_work/<shard file name>.json``."""
    return out.child(WORK_DIR, file.rsplit("/", 1)[-1] + ".json")


def index_file(file: str) -> str:
    """The path of the index of the shard written to ``file``: ``<shard file>.idx``."""
    return file + records.INDEX_SUFFIX


@dataclass(frozen=True)
class Job:
    """What every shard of one conversion shares (small: it is sent to each worker)."""

    data_url: str
    out_url: str
    wnids: tuple[str, ...]
    options: Options = Options()
    words: tuple[str, ...] = ()  # each class's words (tf-models' image/class/text)
    boxes: str = ""  # the pixel convention of the sources' boxes (Plan.boxes); "": no boxes
    fence: Callable[[Location | None], None] | None = (
        None  # the output's fence (fs.fence), for workers started by spawn
    )

    @classmethod
    def of(cls, plan: Plan, out_url: str, options: Options = Options()) -> Job:
        words = tuple(c.words for c in plan.classes)
        fence = fence_of(Location.of(out_url))
        return cls(plan.data, str(out_url), plan.wnids, options, words, plan.boxes, fence)

    @cached_property
    def spec(self) -> str:
        """What every shard's content depends on besides its plan entry: the classes and the options."""
        spec = {"wnids": self.wnids, "options": self.options.fingerprint()}
        if self.options.format == formats.TF_MODELS:  # (its records hold each class's words)
            spec["words"] = self.words
        return json.dumps(spec, sort_keys=True)

    def file(self, shard: Shard) -> str:
        """Where the shard goes, relative to the output root (formats.shard_path)."""
        return formats.shard_file(shard, self.options.format, self.data_url)


def convert_shard(job: Job, shard_id: int, text: str) -> dict:
    """Write one shard, given as JSON with its sources (plan.shard_text), unless a verified copy
    made from the same inputs exists; return its statistics."""
    shard = Shard.from_json(json.loads(text))
    if shard.sources is None:
        raise PlanError(f"{shard.file}: the shard's sources are not in plan.json but in its task's slice")
    out, root = Location.of(job.out_url), Location.of(job.data_url)
    if job.fence is not None and fence_of(out) is None:  # (a worker started by spawn)
        fence(out, job.fence)
    fingerprint = _fingerprint(job, text)
    file = job.file(shard)
    done = _finished(out, file, fingerprint)
    if done is not None:
        return done
    started = time.perf_counter()
    stats = _write_shard(job, shard, root, shard.sources, out.child(file), out.child(index_file(file)))
    stats |= {"shard": shard_id, "split": shard.split, "file": file, "fingerprint": fingerprint}
    stats["index"] = index_file(file)
    stats["seconds"] = round(time.perf_counter() - started, 4)
    stats_location(out, file).write_text(json.dumps(stats, sort_keys=True))
    return json.loads(json.dumps(stats))  # Counters -> plain dicts, as a re-run would read it


def _write_shard(job: Job, shard: Shard, root: Location, sources, target: Location, index: Location) -> dict:
    """Decode every source and write the records, then their index (each atomically); return what
    became of each input."""
    keep_freed_memory()  # (pixel buffers: see procs.keep_freed_memory)
    options, encoder = job.options, formats.encoder(job)
    resize = options.resizing()
    with_boxes = bool(job.boxes) and encoder.boxes
    inclusive = job.boxes == boxes.INCLUSIVE
    given = clipped_boxes = dropped_boxes = 0  # over the records written with boxes
    size = parse_size(options.image_size) if options.image_size else None
    rejected: list[dict] = []
    skipped: list[dict] = []
    converted: Counter = Counter()
    reencoded: Counter = Counter()
    kept: list[tuple[int, int, int]] = []  # (label, height, width) of each record written
    written = 0
    read_errors = 0  # inputs that could not be read (I/O), as against inputs whose content is bad
    index_lines: list[str] = []  # "offset length" of each record's framing, as written
    # (name, bytes or error, label read with them or None: the planned one) of the sources to convert
    data_iter = read_sources(root, shard.dir, [s for s in sources if s.reason is None], len(job.wnids))
    digest = hashlib.sha256()  # of the shard's bytes, as they are written
    with publish(target) as f:
        write_file, hash_bytes = f.write, digest.update

        def write(data: bytes) -> None:
            hash_bytes(data)
            write_file(data)

        for name, label, reason, _, given_boxes in sources:
            path = f"{shard.dir}/{name}"
            if reason is not None:
                rejected.append({"path": path, "reason": reason})
                continue
            _, data, read_label = next(data_iter)
            if isinstance(data, OSError) and data.errno in (errno.EMFILE, errno.ENFILE):
                raise data  # the run's limit on open files, not the input's fault
            if isinstance(data, Unusable):
                rejected.append({"path": path, "reason": str(data)})
                continue
            if isinstance(data, Exception):
                rejected.append({"path": path, "reason": f"cannot read: {data}"})
                read_errors += 1
                continue
            if read_label is not None:
                label = read_label
            try:
                img = encoder.image(data)
            except BadImage as e:
                rejected.append({"path": path, "reason": str(e)})
                continue
            h, w = img.height, img.width
            if size and (img.read or (h, w)) != size:
                rh, rw = img.read or (h, w)
                rejected.append({"path": path, "reason": f"image is {rh}x{rw}, expected {options.image_size}"})
                continue
            if img.source != "rgb":
                if options.grayscale == "skip":
                    skipped.append({"path": path, "reason": f"{img.source} image (grayscale policy: skip)"})
                    continue
                converted[img.source] += 1
            if img.reencoded:
                reencoded[img.reencoded] += 1
            extra = b""
            if with_boxes:
                if img.read:  # boxes in the file's pixels, normalised to the part that became the image
                    given_boxes, wh, ww = _in_window(given_boxes, resize.window(*img.read))
                    extra, clipped, dropped = records.box_entries(given_boxes, wh, ww, inclusive=inclusive)
                else:
                    extra, clipped, dropped = records.box_entries(given_boxes, h, w, inclusive=inclusive)
                given, clipped_boxes, dropped_boxes = (
                    given + len(given_boxes),
                    clipped_boxes + clipped,
                    dropped_boxes + dropped,
                )
            size_framed = records.write_framed(write, encoder.record(img, label, path, extra))
            index_lines.append(records.index_line(written, size_framed))
            written += size_framed
            kept.append((label, h, w))
    index_data = "".join(index_lines).encode("ascii")
    box_counts = (
        Counter(given=given, clipped=clipped_boxes, dropped=dropped_boxes) if with_boxes and kept else Counter()
    )
    index.write_bytes(index_data)  # after the shard: an index never describes a shard not yet in place
    labels: Counter = Counter()
    shapes: Counter = Counter()
    for (label, h, w), n in Counter(kept).items():
        labels[str(label)] += n
        shapes[f"{h}x{w}"] += n
    return {
        "found": len(sources),
        "records": len(kept),
        "bytes": written,
        "index_bytes": len(index_data),
        "sha256": digest.hexdigest(),
        "index_sha256": hashlib.sha256(index_data).hexdigest(),
        "rejected": rejected,
        "skipped": skipped,
        "converted": converted,
        "reencoded": reencoded,
        "boxes": box_counts,
        "labels": labels,
        "shapes": shapes,
        "read_errors": read_errors,
    }


def _in_window(given: tuple, window: tuple[float, float, float, float]) -> tuple[tuple, float, float]:
    """Boxes (in an image's pixels) relative to ``window`` (left, top, right, bottom) of the image, and
    the window's height and width: records.box_entries then clips them to it and drops what is outside."""
    left, top, right, bottom = window
    if not (left or top):
        return given, bottom, right
    moved = tuple((x0 - left, y0 - top, x1 - left, y1 - top, label) for x0, y0, x1, y1, label in given)
    return moved, bottom - top, right - left


def _fingerprint(job: Job, text: str) -> str:
    """What a shard's content depends on: its plan entry (``text``: every source, and the digest
    of their files' names, sizes and change stamps), the classes and the options."""
    return hashlib.sha256(f"{text}\n{job.spec}".encode()).hexdigest()[:32]


def _finished(out: Location, file: str, fingerprint: str) -> dict | None:
    """The recorded statistics of a complete shard from an earlier run, or None.

    The shard is kept when it was made from the same plan entry and options, read every input it
    was to read (a shard with read errors, which may pass, is converted again), has the recorded
    size, every record's framing and CRC32C checksums are intact (a torn or bit-flipped file is
    converted again), its SHA-256 is the recorded one (not another shard copied over it; shards
    recorded without one are converted again) and its index exists with the recorded size and
    SHA-256 (else the shard is converted again, index and all).
    """
    recorded, target, index = stats_location(out, file), out.child(file), out.child(index_file(file))
    if not (recorded.exists() and target.exists() and index.exists()):
        return None
    try:
        stats = json.loads(recorded.read_text())
        if not isinstance(stats, dict):  # a damaged statistics file: convert the shard again
            return None
        if stats.get("fingerprint") != fingerprint or stats.get("read_errors") or target.size() != stats["bytes"]:
            return None
        if index.size() != stats["index_bytes"] or not stats.get("sha256"):
            return None
        if hashlib.sha256(index.read_bytes()).hexdigest() != stats.get("index_sha256"):
            return None
        with target.fs.open(target.path, "rb") as f:
            hashing = recordio.Hashing(f)
            if recordio.count_records(hashing) != stats["records"] or hashing.hexdigest() != stats["sha256"]:
                return None
    except (ValueError, KeyError, TypeError, recordio.CorruptShard):
        return None
    stats["resumed"] = True
    return stats


def convert(
    plan: Plan,
    shards: Iterable[tuple[int, str]],
    out_url: str,
    options: Options = Options(),
    *,
    workers: int = 0,
    on_done: Callable[[dict], None] | None = None,
    count: int = 0,
) -> list[dict]:
    """Convert (shard id, shard_text) pairs with a pool of ``workers`` processes (0: every available CPU;
    never more than ``count``, the number of pairs when the caller knows it).

    The pairs are taken as workers free up (a few queued per worker), so a task's slice is
    streamed, not held. Returns the shards' statistics in shard id order; ``on_done`` is called
    as each finishes.
    """
    job = Job.of(plan, out_url, options)
    workers = min(workers or available_cpus(), count or sys.maxsize)
    results: dict[int, dict] = {}

    def done(i: int, stats: dict) -> None:
        check_terminated()
        results[i] = stats
        if on_done:
            on_done(stats)

    if workers == 1:
        for i, text in shards:
            done(i, convert_shard(job, i, text))
        return [results[i] for i in sorted(results)]
    # fork: workers start in milliseconds and never import TensorFlow or kfp themselves, nor the
    # decoders (imported here once, before the fork, not once in each worker).
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401
    import simplejpeg  # noqa: F401

    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    # workers die with this process (SIGKILL of it, e.g. by the out-of-memory killer, included)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker_init, initargs=(os.getpid(),)) as pool:
        pending: dict = {}
        try:
            for i, text in shards:
                pending[pool.submit(convert_shard, job, i, text)] = i
                if len(pending) >= 2 * workers:
                    _collect(pending, done)
            while pending:
                _collect(pending, done)
        except BrokenProcessPool:
            unfinished = sorted(pending.values())
            first = job.file(plan.shards[unfinished[0]])
            raise WorkerDied(
                "a worker process died abruptly (killed by a signal, e.g. by the out-of-memory killer) before "
                f"{len(unfinished)} queued shards were done (first: {first}); finished shards "
                "are kept: run the same command again to resume"
            ) from None
        except LostOutput:
            _end_under_way(pool, pending)
            raise
        except BaseException:  # an error, Ctrl-C or SIGTERM: stop now rather than after every queued shard
            stop_pool(pool)
            raise
    return [results[i] for i in sorted(results)]


LOST_GRACE = 10.0  # seconds the shards under way may take to end once the output is lost


def _end_under_way(pool: ProcessPoolExecutor, pending: dict, grace: float = LOST_GRACE) -> None:
    """After the output was lost (another run holds its lease): cancel the queued shards and give
    those under way ``grace`` seconds to end before their workers are killed. Each stops at its next
    publication's fence; one that committed a file as the lease was lost removes it right after its
    commit (lock.Fence._take_back), which a worker killed in between would leave in the new owner's
    output. Ctrl-C or SIGTERM meanwhile stops the pool at once."""
    deadline = time.monotonic() + grace
    try:
        for fut in pending:
            fut.cancel()
        while (under_way := [f for f in pending if not f.done()]) and time.monotonic() < deadline:
            first_done(under_way, until=deadline)
    finally:
        stop_pool(pool)


def _collect(pending: dict, done: Callable[[int, dict], None]) -> None:
    """Wait for some of the pending futures and hand over their results (raising a worker's error)."""
    finished = first_done(pending)
    for fut in sorted(finished, key=lambda f: pending[f]):
        i = pending[fut]
        stats = fut.result()
        del pending[fut]
        done(i, stats)


def recorded_stats(plan: Plan, out_url: str, fmt: str = formats.SEED) -> list[dict]:
    """The statistics every planned shard left under ``_work/`` (batched reads on object stores).

    A shard without statistics (or with a damaged statistics file) is left out; stats.summarize names it.
    """
    work = Location.of(out_url).child(WORK_DIR)
    names = [formats.shard_file(s, fmt, plan.data).rsplit("/", 1)[-1] + ".json" for s in plan.shards]
    found = []
    for _, data in work.read_many(names):
        try:
            stats = json.loads(data) if not isinstance(data, Exception) else None
        except ValueError:
            stats = None
        if isinstance(stats, dict) and "file" in stats:
            found.append(stats)
    return found
