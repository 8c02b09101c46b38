"""A PyTorch reader of converted TFRecords, without TensorFlow.

``TFRecordImages(source, split)`` is a ``torch.utils.data.IterableDataset`` of ``(image, label)``:
``image`` a uint8 tensor [H, W, 3], ``label`` an int as stored (-1 for test), in every format. Records
are unframed by ``recordio.iter_records`` (both CRC32C checksums checked) and decoded by
``formats.decode_record`` (the JPEG of tf-models and tfds records by libjpeg-turbo). Files are read
through fsspec, so local paths, gs:// and s3:// all work.

Splitting: the split's records, numbered globally in the order of dataset_info.json's shard list,
are cut into ``world_size * num_workers`` contiguous, near-equal parts; part ``rank * num_workers +
worker`` is read by that DataLoader worker of that rank. A part is a list of (shard, first record,
end record) ranges; each shard's index (``<shard>.tfrecord.idx``) gives the byte offset of a
range's first record, so a reader seeks there and reads only its own records. A shard without an
index (outputs converted before indexes existed) is read whole by the part holding its first record.
Every record is read exactly once per epoch across all ranks and workers.
"""

from __future__ import annotations

import random
from itertools import islice

from .fs import Location, MissingPackageError, install_command

try:
    import torch
    import torch.distributed as dist
    from torch.utils.data import IterableDataset, get_worker_info
except ModuleNotFoundError as e:
    if e.name != "torch":
        raise
    raise MissingPackageError(
        f"imagenet_tfrecords.torch needs PyTorch ({e}): {install_command('torch')} "
        f"(or read the records with TensorFlow: imagenet_tfrecords.load, {install_command('tf')})"
    ) from None

from . import formats
from .reader import dataset_info
from .recordio import CorruptShard, iter_records, parse_index

_BLOCK = 256  # records: with shuffle, a part's ranges are cut into blocks of this size read in a random order


def _distributed() -> tuple[int, int]:
    """(rank, world_size) of torch.distributed when initialised, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def part_ranges(shards: list[dict], part: int, parts: int) -> list[tuple[int, int, int]]:
    """(shard number, first record, end record) of part ``part`` of ``parts``.

    Part p holds the records numbered [total * p // parts, total * (p + 1) // parts) in the order of
    ``shards`` (dataset_info.json's list for one split). A shard with no ``index`` cannot be entered
    in the middle: it belongs whole to the part holding its first record.
    """
    total = sum(s["records"] for s in shards)
    lo, hi = total * part // parts, total * (part + 1) // parts
    out = []
    start = 0
    for n, shard in enumerate(shards):
        end = start + shard["records"]
        if "index" not in shard:
            if shard["records"] and lo <= start < hi:
                out.append((n, 0, shard["records"]))
        elif max(lo, start) < min(hi, end):
            out.append((n, max(lo, start) - start, min(hi, end) - start))
        start = end
    return out


class TFRecordImages(IterableDataset):
    """(image, label) of one split of a converted output, split across ranks and DataLoader workers.

    ``source``: an output URL (local, gs://, s3://, ...) or the pipeline's ``dataset`` artifact.
    ``rank`` and ``world_size`` default to torch.distributed's when it is initialised (create the
    dataset after ``init_process_group``), else 0 and 1. With ``shuffle`` each part's records come in
    an order drawn from (``seed``, epoch, part): blocks of records in a random order, then a shuffle
    buffer of ``shuffle_buffer`` records. Call ``set_epoch(n)`` before each epoch for a new order
    (as with DistributedSampler; with ``persistent_workers=True`` the workers keep the epoch they
    started with). No DistributedSampler is needed: the dataset splits itself. An output marked
    rejected (too many inputs rejected) is refused unless ``allow_rejected=True``.
    """

    def __init__(
        self,
        source,
        split: str,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_buffer: int = 10_000,
        allow_rejected: bool = False,
    ):
        super().__init__()
        info, root = dataset_info(source, allow_rejected)
        if split not in info["splits"]:
            raise ValueError(f"no split {split!r} in dataset_info.json; the dataset has {sorted(info['splits'])}")
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither (then torch.distributed's are used)")
        if rank is None:
            rank, world_size = _distributed()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.root_url = root.url
        self.split = split
        self.shards = list(info["splits"][split]["shards"])
        self.format = formats.of_info(info)
        self.num_records = sum(s["records"] for s in self.shards)
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, max(1, shuffle_buffer)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next iteration's order from this epoch (the same epoch gives the same order)."""
        self.epoch = epoch

    def part(self) -> tuple[int, int]:
        """(part number, number of parts) of the calling process: rank and DataLoader worker."""
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        return self.rank * workers + worker_id, self.world_size * workers

    def __iter__(self):
        part, parts = self.part()
        root = Location.of(self.root_url)
        ranges = part_ranges(self.shards, part, parts)
        if not self.shuffle:
            for n, lo, hi in ranges:
                yield from self._read(root, n, lo, hi)
            return
        rng = random.Random(f"{self.seed}/{self.epoch}/{part}/{parts}")
        blocks = []
        for n, lo, hi in ranges:
            step = _BLOCK if "index" in self.shards[n] else hi - lo  # (no index: one pass over the shard)
            blocks += [(n, b, min(b + step, hi)) for b in range(lo, hi, step)]
        rng.shuffle(blocks)
        buffer: list = []
        for n, lo, hi in blocks:
            for item in self._read(root, n, lo, hi):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(item)
                    continue
                i = rng.randrange(len(buffer))
                buffer[i], item = item, buffer[i]
                yield item
        rng.shuffle(buffer)
        yield from buffer

    def _read(self, root: Location, n: int, lo: int, hi: int):
        """(image, label) of records [lo, hi) of shard n, read from the byte offset its index gives."""
        shard = self.shards[n]
        loc = root.child(shard["file"])
        offset = 0
        if lo and "index" in shard:
            entries = parse_index(root.child(shard["index"]).read_text())
            if len(entries) != shard["records"]:
                raise CorruptShard(f"{shard['index']}: {len(entries)} lines, dataset_info.json says {shard['records']}")
            offset = entries[lo][0]
        with open(loc.path, "rb") if loc.is_local else loc.fs.open(loc.path, "rb", block_size=8 << 20) as f:
            f.seek(offset)
            got = 0
            for record in islice(iter_records(f), hi - lo):
                got += 1
                yield _decode(record, shard["file"], lo + got - 1, self.format)
        if got != hi - lo:
            raise CorruptShard(f"{shard['file']}: {lo + got} records, dataset_info.json says {shard['records']}")


def _decode(record: bytes, file: str, n: int, fmt: str = formats.SEED) -> tuple[torch.Tensor, int]:
    """A record of any format as (uint8 pixels [H, W, C], label) (formats.decode_record); a record
    that does not decode is a CorruptShard naming the file and the record."""
    try:
        pixels, label, _ = formats.decode_record(fmt, record)
    except (KeyError, IndexError) as e:
        raise CorruptShard(f"{file}: record {n} has no {e} feature") from None
    except ValueError as e:
        raise CorruptShard(f"{file}: record {n}: {e}") from None
    # (seed's pixels are a read-only view of the record; torch wants memory of its own)
    return torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy()), int(label)
