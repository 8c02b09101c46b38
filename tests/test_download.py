"""`imagenet-tfrecords download` against a real HTTP server on 127.0.0.1 with Range support."""

import hashlib
import io
import os
import re
import stat
import subprocess
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imagenet_tfrecords.download import check_archive

from .conftest import run_cli
from .servers import free_port

FILES = {
    "tiny-imagenet-200/wnids.txt": b"n01443537\nn01629819\n",
    "tiny-imagenet-200/words.txt": b"n01443537\tgoldfish\nn01629819\tsalamander",
    "tiny-imagenet-200/train/n01443537/images/n01443537_0.JPEG": bytes(range(256)) * 40,
    "tiny-imagenet-200/val/val_annotations.txt": b"val_0.JPEG\tn01443537\t0\t0\t63\t63\n",
}


def make_zip(entries) -> bytes:
    """A zip of (ZipInfo or name, bytes); stored uncompressed so it has a useful size."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


ARCHIVE = make_zip(FILES.items())
SHA = hashlib.sha256(ARCHIVE).hexdigest()


class Server:
    """Serves ``files`` (path -> bytes) with single-range Range support; records every request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []  # path, range header, status, bytes sent
        self.ignore_range = False
        self.drop_after: int | None = None  # cut the next response after this many body bytes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                rng = self.headers.get("Range")
                record = {"path": self.path, "range": rng, "status": 404, "sent": 0}
                server.requests.append(record)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                if rng and not server.ignore_range:
                    m = re.fullmatch(r"bytes=(\d+)-", rng)
                    assert m, rng
                    start = int(m.group(1))
                    if start >= len(data):
                        record["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                record["status"] = status
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.drop_after is not None:
                    body, server.drop_after = body[: server.drop_after], None
                    self.close_connection = True
                self.wfile.write(body)
                record["sent"] = len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with Server() as s:
        s.files["/tiny-imagenet-200.zip"] = ARCHIVE
        yield s


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _extracted(out):
    return {k: v for k, v in _tree(out).items() if k.startswith("tiny-imagenet-200/")}


def test_full_download_and_extraction(server, tmp_path):
    out = tmp_path / "data"
    p = run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip")
    assert _extracted(out) == FILES
    assert (out / "tiny-imagenet-200.zip").read_bytes() == ARCHIVE
    assert not (out / "tiny-imagenet-200.zip.part").exists()
    assert f"sha256 {SHA} (not checked" in p.stdout
    assert f"extracted {len(FILES)} files" in p.stdout
    assert [(r["range"], r["status"], r["sent"]) for r in server.requests] == [(None, 200, len(ARCHIVE))]
    # again: nothing is fetched, the extraction is recognised, the checksum still checked
    p = run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA)
    assert len(server.requests) == 1
    assert f"sha256 {SHA}: matches" in p.stdout and "already extracted" in p.stdout
    assert _extracted(out) == FILES


def test_resume_requests_only_the_rest(server, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    have = len(ARCHIVE) // 3
    (out / "tiny-imagenet-200.zip.part").write_bytes(ARCHIVE[:have])
    p = run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA)
    assert [(r["range"], r["status"], r["sent"]) for r in server.requests] == [
        (f"bytes={have}-", 206, len(ARCHIVE) - have)
    ]
    assert f"resumed after {have} bytes" in p.stdout and f"{len(ARCHIVE) - have} downloaded now" in p.stdout
    assert f"sha256 {SHA}: matches" in p.stdout
    assert (out / "tiny-imagenet-200.zip").read_bytes() == ARCHIVE
    assert _extracted(out) == FILES


def test_dropped_connection_is_resumed(server, tmp_path):
    out = tmp_path / "data"
    server.drop_after = 1000
    run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA)
    assert [(r["range"], r["status"]) for r in server.requests] == [(None, 200), ("bytes=1000-", 206)]
    assert server.requests[1]["sent"] == len(ARCHIVE) - 1000
    assert _extracted(out) == FILES


def test_server_without_range_support_starts_over(server, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "tiny-imagenet-200.zip.part").write_bytes(ARCHIVE[:500])
    server.ignore_range = True
    p = run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA)
    assert "resumed" not in p.stdout and "does not support resuming" in p.stderr
    assert [(r["range"], r["status"], r["sent"]) for r in server.requests] == [("bytes=500-", 200, len(ARCHIVE))]
    assert (out / "tiny-imagenet-200.zip").read_bytes() == ARCHIVE
    assert _extracted(out) == FILES


def test_complete_part_file_is_not_downloaded_again(server, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "tiny-imagenet-200.zip.part").write_bytes(ARCHIVE)
    run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA)
    assert [(r["range"], r["status"]) for r in server.requests] == [(f"bytes={len(ARCHIVE)}-", 416)]
    assert _extracted(out) == FILES


def test_checksum_mismatch_exits_3_and_extracts_nothing(server, tmp_path):
    out = tmp_path / "data"
    p = run_cli(
        "download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", "0" * 64, check=False
    )
    assert p.returncode == 3, p.stderr
    assert f"SHA-256 is {SHA}, expected {'0' * 64}" in p.stderr
    assert sorted(x.name for x in out.iterdir()) == []  # no archive kept, nothing extracted


def test_corrupt_partial_file_fails_the_checksum(server, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "tiny-imagenet-200.zip.part").write_bytes(b"x" * 100)  # not the archive's first bytes
    p = run_cli(
        "download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA, check=False
    )
    assert p.returncode == 3 and "nothing was extracted" in p.stderr
    assert list(out.iterdir()) == []
    # the bad file is gone, so the next run downloads cleanly
    run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA)
    assert _extracted(out) == FILES


def _symlink(name, target):
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


@pytest.mark.parametrize(
    "evil, reason",
    [
        (("../evil.txt", b"outside"), "'..' component"),
        (("tiny-imagenet-200/../../evil.txt", b"outside"), "'..' component"),
        (("/tmp/evil.txt", b"absolute"), "absolute path"),
        (_symlink("tiny-imagenet-200/link", b"../../../etc/passwd"), "symbolic link"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink"],
)
def test_unsafe_archive_is_refused_before_anything_is_written(server, tmp_path, evil, reason):
    data = make_zip([*FILES.items(), evil])
    name = evil[0] if isinstance(evil[0], str) else evil[0].filename
    server.files["/evil.zip"] = data
    root = tmp_path / "a" / "b"
    out = root / "data"
    p = run_cli("download", "--output", out, "--url", f"{server.url}/evil.zip", check=False)
    assert p.returncode == 3, p.stderr
    assert f"{name!r}: {reason}" in p.stderr and "refusing to extract" in p.stderr
    assert [x.name for x in out.iterdir()] == ["evil.zip"]  # the archive only: not even the safe entries
    assert _tree(tmp_path) == {"a/b/data/evil.zip": data}
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "a" / "evil.txt").exists()


def test_entry_through_an_existing_symlink_is_refused(tmp_path):
    """A folder in the target that links elsewhere must not let an entry land outside."""
    target = tmp_path / "target"
    (target).mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "tiny-imagenet-200").symlink_to(elsewhere)
    archive = tmp_path / "a.zip"
    archive.write_bytes(ARCHIVE)
    with pytest.raises(ValueError, match="resolves outside the target folder"):
        check_archive(str(archive), str(target))


def test_http_error_and_bad_arguments(server, tmp_path):
    p = run_cli("download", "--output", tmp_path / "d", "--url", f"{server.url}/missing.zip", check=False)
    assert p.returncode == 3, p.stderr  # the environment's problem, not an internal error
    assert p.stderr.splitlines() == [f"error: {server.url}/missing.zip: HTTP 404 Not Found"]
    assert len(server.requests) == 1  # a 404 is not retried
    p = run_cli("download", "--output", tmp_path / "d", "--sha256", "abc", check=False)
    assert p.returncode == 2 and "64 hexadecimal digits" in p.stderr


def test_not_a_zip_exits_3(server, tmp_path):
    server.files["/fake.zip"] = b"<html>not found</html>"
    p = run_cli("download", "--output", tmp_path / "d", "--url", f"{server.url}/fake.zip", check=False)
    assert p.returncode == 3 and "not a readable zip archive" in p.stderr


def _sha256s(root):
    return {k: hashlib.sha256(v).hexdigest() for k, v in _tree(root).items()}


def test_an_extracted_folder_that_differs_is_refused_and_left_as_it_is(server, tmp_path):
    """The extracted dataset was changed since (by hand, or by ``sample --output`` into it): a second
    download neither says "already extracted" nor overwrites it, and says how to proceed."""
    out = tmp_path / "data"
    url = f"{server.url}/tiny-imagenet-200.zip"
    run_cli("download", "--output", out, "--url", url, "--sha256", SHA)
    (out / "tiny-imagenet-200" / "wnids.txt").write_bytes(b"n01443537\n")
    (out / "tiny-imagenet-200" / "train" / "n99999999").mkdir()
    (out / "tiny-imagenet-200" / "train" / "n99999999" / "x.JPEG").write_bytes(b"mine")
    before = _sha256s(out)
    p = run_cli("download", "--output", out, "--url", url, "--sha256", SHA, check=False)
    assert p.returncode == 3, p.stderr
    error = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert error == [
        f"error: {out / 'tiny-imagenet-200'} exists and differs from {out / 'tiny-imagenet-200.zip'} "
        "(tiny-imagenet-200/wnids.txt: 10 bytes, the archive's 20, and 2 more differences); it was left as it is: "
        "move it away (or choose another --output) and run the command again to extract the archive"
    ], p.stderr
    assert _sha256s(out) == before
    # moved away, the same command extracts a fresh copy
    (out / "tiny-imagenet-200").rename(tmp_path / "mine")
    run_cli("download", "--output", out, "--url", url, "--sha256", SHA)
    assert _extracted(out) == FILES


def test_an_archive_that_was_there_before_is_never_deleted(server, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "tiny-imagenet-200.zip").write_bytes(b"my own file of that name")
    p = run_cli(
        "download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", "--sha256", SHA, check=False
    )
    assert p.returncode == 3 and "the file was there before and is left as it is" in p.stderr, p.stderr
    assert _tree(out) == {"tiny-imagenet-200.zip": b"my own file of that name"}
    assert server.requests == []


def test_a_host_that_cannot_be_reached_is_one_line_exit_3_at_once(tmp_path):
    port = free_port()  # nothing listens there: the connection is refused
    url = f"http://127.0.0.1:{port}/tiny-imagenet-200.zip"
    started = time.monotonic()
    p = run_cli("download", "--output", tmp_path / "d", "--url", url, check=False)
    assert p.returncode == 3, p.stderr
    assert p.stderr.splitlines() == [f"error: {url}: cannot connect to 127.0.0.1:{port}: Connection refused"]
    assert time.monotonic() - started < 10  # not retried with back-off


def test_a_full_disk_while_extracting_is_one_line_exit_3_and_extracts_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    # 2 MB of zeros deflate to a few KB: the archive fits on the disk, its contents do not
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
        zf.writestr("tiny-imagenet-200/big.bin", bytes(2_000_000))
    try:
        with Server() as server:
            server.files["/tiny-imagenet-200.zip"] = buf.getvalue()
            out = disk / "data"
            p = run_cli("download", "--output", out, "--url", f"{server.url}/tiny-imagenet-200.zip", check=False)
            errors = [line for line in p.stderr.splitlines() if not line.startswith("INFO ")]
            assert p.returncode == 3 and len(errors) == 1, p.stderr
            assert errors[0] == (
                f"error: {out / 'tiny-imagenet-200.zip'}: cannot be extracted into {out}: No space left on device; "
                "nothing was extracted (the archive is kept: make room and run the same command again)"
            )
            assert sorted(os.listdir(out)) == ["tiny-imagenet-200.zip"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)
