"""Tar files built in memory, member by member, for the archive layouts' tests and benchmarks."""

from __future__ import annotations

import io
import tarfile


def tar_of(members: dict[str, bytes], fmt: int = tarfile.GNU_FORMAT, gz: bool = False) -> bytes:
    """A tar (gzipped with ``gz``) of regular files, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
