"""A self-contained HTML report of a converted dataset.

The report is built from an output root: ``dataset_info.json`` (``conversion_info.json`` in the
tfds format), ``labels.txt`` and the TFRecord shards themselves, in any format. It shows records
per split, grayscale/CMYK conversions and skipped images, the class distribution (inline SVG), a
grid of sample images decoded back from the written records, and the rejects. Every image is
inline (``data:`` URIs) and there is no script, so it renders as a Kubeflow HTML artifact, in a
mail or offline.

Records are read with ``recordio.iter_records`` and a small reader of the protobuf wire
format, so building the report never imports TensorFlow.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import formats
from .fs import Location
from .image import resize_text
from .plan import SPLITS
from .recordio import CorruptShard, iter_records
from .stats import read_info, throughput

if TYPE_CHECKING:  # (numpy and Pillow: imported where the samples are picked and drawn)
    import numpy as np

SAMPLES_PER_SPLIT = 8
MAX_ROWS = 200
DASH = "\u2013"
THUMB = 128  # displayed size of a sample's longer side, in CSS pixels


@dataclass
class Sample:
    split: str
    filename: str
    label: int
    pixels: np.ndarray  # H x W x C uint8


def decode_any(data: bytes, split: str, fmt: str = formats.SEED, label_offset: int = 0) -> Sample:
    """A record of any format back to a Sample (formats.decode_record); its label is the class
    index (``label_offset`` taken off). A record that does not decode raises ValueError."""
    try:
        pixels, label, filename = formats.decode_record(fmt, data)
    except (KeyError, IndexError) as e:
        raise ValueError(f"record lacks feature {e}") from None
    return Sample(split, filename, label - label_offset if label >= 0 else -1, pixels)


def read_samples(
    root: Location, shards: list[dict], split: str, count: int, fmt: str = formats.SEED, label_offset: int = 0
) -> tuple[list[Sample], list[str]]:
    """Up to ``count`` records spread over the split's shards, and the errors met reading them.

    Shards are picked evenly (so the grid shows many classes even when train shards hold one
    class each), and only the first records of each are read.
    """
    shards = [s for s in shards if s["records"]]
    if not shards or count <= 0:
        return [], []
    import numpy as np

    k = min(count, len(shards))
    picked = [shards[round(i)] for i in np.linspace(0, len(shards) - 1, k)]
    samples: list[Sample] = []
    errors = []
    for i, shard in enumerate(picked):
        want = count // k + (i < count % k)
        loc = root.child(shard["file"])
        try:
            with loc.fs.open(loc.path, "rb", block_size=1 << 18) as f:
                for data in iter_records(f):
                    samples.append(decode_any(data, split, fmt, label_offset))
                    want -= 1
                    if not want:
                        break
        except (OSError, ValueError, CorruptShard) as e:
            errors.append(f"{shard['file']}: {type(e).__name__}: {e}")
    return samples, errors


# --- metrics -----------------------------------------------------------------------------


# --- HTML --------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;
margin:20px auto;max-width:1120px;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d8dee4;
padding-bottom:4px}h3{font-size:14px;margin:14px 0 6px}
.muted{color:#656d76;font-weight:normal}.meta{color:#656d76;margin:0 0 12px}.meta code{color:#1f2328}
table{border-collapse:collapse;margin:4px 0}th,td{border:1px solid #d8dee4;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;background:#f6f8fa}
.grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:128px}
figure img{display:block;image-rendering:pixelated;border:1px solid #d8dee4;background:#f6f8fa}
figcaption{font-size:11px;line-height:1.25;margin-top:2px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.tag{font-size:10px;background:#eef1f4;color:#57606a;border-radius:3px;padding:0 3px}
.error{color:#b42318;background:#fef3f2;border:1px solid #fecdca;padding:4px 8px;margin:4px 0}
.warn{color:#7a4a00}summary{cursor:pointer;margin:14px 0 6px}.ok{color:#1a7f37}
.rows td{font-size:12px}.rows td:first-child{font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
svg text{font:11px system-ui,sans-serif;fill:#57606a}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _n(value) -> str:
    return f"{value:,}"


def _plural(n: int, word: str) -> str:
    return f"{_n(n)} {plural(n, word)}"


def plural(n: int, word: str) -> str:
    """``word`` for ``n`` of it: "1 class", "2 classes", "3 boxes", "4 shards"."""
    if n == 1:
        return word
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def _size(n: int) -> str:
    """Bytes in binary units, named as such (1 GiB = 2**30 bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _options(options: dict) -> str:
    shown = [f"{k}={json.dumps(v) if v == '' else v}" for k, v in options.items()]
    return ", ".join(shown) or "default"


def _png_uri(pixels: np.ndarray) -> tuple[str, int, int]:
    """A PNG data URI of the pixels (shrunk when larger than THUMB) and its display size."""
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    img = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    if max(img.size) > THUMB:
        img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    w, h = img.size
    scale = max(1, THUMB // max(w, h))  # small images are shown enlarged, pixel for pixel
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), w * scale, h * scale


def _short(words: str, limit: int = 22) -> str:
    first = words.split(",")[0].strip() or words
    return first if len(first) <= limit else first[: limit - 1] + "\u2026"


def _labels(root: Location) -> list[tuple[str, str]]:
    loc = root.child("labels.txt")
    if not loc.exists():
        return []
    return [tuple((line.split("\t", 1) + [""])[:2]) for line in loc.read_text().splitlines()]


def _figure(s: Sample, labels: list[tuple[str, str]]) -> str:
    uri, w, h = _png_uri(s.pixels)
    if s.label >= 0:
        wnid, words = labels[s.label] if s.label < len(labels) else ("", "")
        caption = f"<b>{s.label}</b> {_e(_short(words))}"
        title = f"{s.filename}\nlabel {s.label} {wnid}: {words}"
    else:
        caption = _e(s.filename.rsplit("/", 1)[-1])
        title = f"{s.filename}\nunlabelled"
    import numpy as np

    p = s.pixels
    if p.shape[2] >= 3 and np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2]):
        caption += ' <span class="tag">gray</span>'
    return (
        f'<figure data-file="{_e(s.filename)}"><img src="{uri}" width="{w}" height="{h}" alt="{_e(s.filename)}" '
        f'title="{_e(title)}"><figcaption title="{_e(title)}">{caption}</figcaption></figure>'
    )


def _histogram(counts: list[int], labels: list[tuple[str, str]]) -> str:
    """An inline SVG bar chart of records per class."""
    width, height, left, right, top, bottom = 1000, 150, 44, 8, 8, 22
    pw, ph = width - left - right, height - top - bottom
    peak = max(counts) or 1
    bw = pw / len(counts)
    gap = bw * 0.15 if bw >= 4 else 0
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img">',
        f'<line x1="{left}" y1="{top + ph}" x2="{width - right}" y2="{top + ph}" stroke="#8c959f"/>',
        f'<line x1="{left}" y1="{top}" x2="{width - right}" y2="{top}" stroke="#eaeef2"/>',
        f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 6}">label 0</text>',
        f'<text x="{width - right}" y="{height - 6}" text-anchor="end">label {len(counts) - 1}</text>',
    ]
    for i, c in enumerate(counts):
        x = left + i * bw
        name = labels[i][1] if i < len(labels) else ""
        tip = f"<title>{i} {_e(labels[i][0] if i < len(labels) else '')} {_e(name)}: {c}</title>"
        if c == 0:  # an empty class: a red tick under the axis
            parts.append(
                f'<rect x="{x:.2f}" y="{top + ph + 1}" width="{max(bw - gap, 1):.2f}" height="5" fill="#cf222e">'
            )
        else:
            bh = max(ph * c / peak, 1)
            parts.append(
                f'<rect x="{x:.2f}" y="{top + ph - bh:.2f}" width="{max(bw - gap, 0.6):.2f}" height="{bh:.2f}" '
                f'fill="#4c7bd9">'
            )
        parts.append(tip + "</rect>")
    parts.append("</svg>")
    return "".join(parts)


def _rows(title: str, rows: list[dict], limit: int, *, folded: bool = False) -> str:
    """A path/reason table of at most ``limit`` rows, the total in its heading."""
    if not rows:
        return f'<h3>{_e(title)}: <span class="ok">none</span></h3>'
    shown = rows[:limit]
    note = f" (first {len(shown)} shown)" if len(rows) > len(shown) else ""
    heading = f'{_e(title)}: {_n(len(rows))}<span class="muted">{note}</span>'
    body = "".join(f"<tr><td>{_e(r['path'])}</td><td>{_e(r['reason'])}</td></tr>" for r in shown)
    table = f'<table class="rows"><tr><th>path</th><th>reason</th></tr>{body}</table>'
    if folded:  # long and expected (e.g. grayscale images under "skip"): one click away
        return f"<details><summary><b>{heading}</b></summary>{table}</details>"
    return f"<h3>{heading}</h3>{table}"


def _split_order(info: dict) -> list[str]:
    """The splits of ``info``: the known ones in their usual order, then any others."""
    return [s for s in SPLITS if s in info["splits"]] + [s for s in info["splits"] if s not in SPLITS]


def _head(info: dict, root: Location, num_classes: int) -> list[str]:
    """The document head, the title and the line naming source, output, classes and options."""
    return [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(info.get('name', 'dataset'))} TFRecords</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(info.get('name', 'dataset'))} \u2192 TFRecords</h1>",
        f'<p class="meta">source <code>{_e(info.get("source", "?"))}</code> \u00b7 output <code>{_e(root.url)}</code>'
        f" \u00b7 {_n(num_classes)} classes \u00b7 options "
        f"<code>{_e(_options(info.get('options', {})))}</code></p>",
        *(
            [f'<p class="meta" id="resize">images resized: {_e(resize_text(info["resize"]))}</p>']
            if info.get("resize")
            else []
        ),
    ]


def _split_row(split: str, s: dict) -> str:
    """One split's row of the records table."""
    converted = ", ".join(f"{k} {_n(v)}" for k, v in s["converted"].items()) or "\u2013"
    shapes = ", ".join(f"{k} ({_n(v)})" for k, v in list(s["shapes"].items())[:4])
    if len(s["shapes"]) > 4:
        shapes += f", \u2026 {len(s['shapes']) - 4} more"
    rate = _n(round(s["num_records"] / s["seconds"])) if s.get("seconds") else "\u2013"
    return (
        f"<tr><td>{_e(split)}</td><td class=n>{_n(s['num_records'])}</td><td class=n>{len(s['shards'])}</td>"
        f"<td class=n>{_size(s['num_bytes'])}</td><td class=n>{_n(s['found'])}</td>"
        f"<td class=n>{_n(s['rejected'])}</td><td class=n>{_n(s['skipped'])}</td>"
        f"<td class=n>{_n(s.get('ignored', 0))}</td><td>{_e(converted)}</td>"
        f"<td>{_e(shapes or DASH)}</td><td class=n>{rate}</td></tr>"
    )


def _totals(info: dict, splits: list[str]) -> dict[str, int]:
    """The counts of the records table summed over the splits."""
    keys = ("num_records", "shards", "num_bytes", "found", "rejected", "skipped", "ignored", "converted")
    totals = dict.fromkeys(keys, 0)
    for split in splits:
        s = info["splits"][split]
        for k in ("num_records", "num_bytes", "found", "rejected", "skipped", "ignored"):
            totals[k] += s.get(k, 0)
        totals["shards"] += len(s["shards"])
        totals["converted"] += sum(s["converted"].values())
    return totals


def _totals_row(totals: dict[str, int], t: dict) -> str:
    """The "all" row closing the records table."""
    rate = _n(round(t["images_per_second_per_worker"])) if "images_per_second_per_worker" in t else "\u2013"
    return (
        f"<tr class=total><td>all</td><td class=n>{_n(totals['num_records'])}</td>"
        f"<td class=n>{totals['shards']}</td><td class=n>{_size(totals['num_bytes'])}</td>"
        f"<td class=n>{_n(totals['found'])}</td><td class=n>{_n(totals['rejected'])}</td>"
        f"<td class=n>{_n(totals['skipped'])}</td><td class=n>{_n(totals['ignored'])}</td>"
        f"<td>{_n(totals['converted'])}</td><td></td>"
        f"<td class=n>{rate}</td></tr></table>"
    )


def _counts_table(info: dict, splits: list[str]) -> list[str]:
    """The records-per-split table: heading, a row per split and the totals."""
    out = [
        "<h2>Records per split</h2><table><tr><th>split</th><th>records</th><th>shards</th><th>size</th>"
        "<th>found</th><th>rejected</th><th>skipped</th>"
        '<th title="not inputs: .DS_Store, Thumbs.db, desktop.ini, names starting with a dot">ignored</th>'
        "<th>converted to RGB</th><th>image sizes</th>"
        "<th>images/s per worker</th></tr>"
    ]
    out.extend(_split_row(split, info["splits"][split]) for split in splits)
    out.append(_totals_row(_totals(info, splits), throughput(info)))
    return out


def _notes(info: dict, splits: list[str]) -> list[str]:
    """The notes under the table (metadata rejects, throughput, resumed shards), then the warnings."""
    t = throughput(info)
    extra_rejects = info["rejected"] - _totals(info, splits)["rejected"]
    notes = []
    if extra_rejects:
        were = "input was" if extra_rejects == 1 else "inputs were"
        notes.append(f"{_n(extra_rejects)} more {were} rejected while reading the metadata (see below).")
    ignored = _totals(info, splits)["ignored"]
    if ignored:
        notes.append(
            f"{_n(ignored)} ignored: files and folders named .DS_Store, ._*, Thumbs.db, desktop.ini or otherwise "
            "starting with a dot, which are not inputs (not found, not rejected, never a class)."
        )
    if "images_per_second_per_worker" in t:
        notes.append(
            f"Images/s per worker: records / seconds spent converting, summed over shards "
            f"({_n(t['records'])} / {t['shard_seconds']:.2f} s)."
        )
    if "images_per_second" in t:
        notes.append(
            f"Conversion phase {t['wall_seconds']:.1f} s (first task start to last task end): "
            f"<b>{_n(round(t['images_per_second']))} images/s</b> overall. (The command line's "
            "\u201cwall time of the whole run\u201d also counts planning and writing the reports.)"
        )
    if t.get("shards_resumed"):
        were = "shard was" if t["shards_resumed"] == 1 else "shards were"
        notes.append(f"{_n(t['shards_resumed'])} {were} kept from an earlier run.")
    out = ["".join(f'<p class="muted">{n}</p>' for n in notes)]
    out.extend(f'<p class="warn">warning: {_e(w)}</p>' for w in info.get("warnings", []))
    return out


def _split_samples(root: Location, info: dict, split: str, labels: list[tuple[str, str]], count: int) -> list[str]:
    """One split's heading, its read errors and its grid of sample images."""
    shards = info["splits"][split]["shards"]
    fmt, offset = formats.of_info(info), int(info.get("options", {}).get("label_offset", 0))
    samples, errors = read_samples(root, shards, split, count, fmt, offset)
    used = len({s["file"] for s in shards if s["records"]})
    out = [
        f'<h3>{_e(split)} <span class="muted">\u2013 {len(samples)} of {_n(info["splits"][split]["num_records"])}'
        f" records, from {_plural(used, 'non-empty shard')}</span></h3>"
    ]
    out.extend(f'<p class="error">cannot read samples: {_e(err)}</p>' for err in errors)
    if samples:
        out.append(f'<div class="grid" id="samples-{_e(split)}">')
        out.extend(_figure(s, labels) for s in samples)
        out.append("</div>")
    return out


def _sample_grids(
    root: Location, info: dict, splits: list[str], labels: list[tuple[str, str]], count: int
) -> list[str]:
    """The samples section: per split, up to ``count`` images decoded from the written records."""
    resized = f", resized to {resize_text(info['resize'])}" if info.get("resize") else ""
    out = [f'<h2>Samples <span class="muted">decoded from the written TFRecords{_e(resized)}</span></h2>']
    for split in splits:
        out.extend(_split_samples(root, info, split, labels, count))
    return out


def _split_histogram(split: str, label_counts: dict, labels: list[tuple[str, str]], num_classes: int) -> list[str]:
    """One split's class summary, histogram and classes without records."""
    counts_by_label = {int(k): v for k, v in label_counts.items()}
    if not any(k >= 0 for k in counts_by_label):
        return [f'<h3>{_e(split)}: <span class="muted">unlabelled</span></h3>']
    n = max(num_classes, max(counts_by_label) + 1)
    counts = [counts_by_label.get(i, 0) for i in range(n)]
    empty = [i for i, c in enumerate(counts) if c == 0]
    summary = f"min {_n(min(counts))} \u00b7 mean {sum(counts) / n:,.1f} \u00b7 max {_n(max(counts))} per class"
    out = [f'<h3>{_e(split)} <span class="muted">\u2013 {summary}</span></h3>', _histogram(counts, labels)]
    if empty:
        names = ", ".join(f"{i} {labels[i][0]}" if i < len(labels) else str(i) for i in empty[:20])
        more = f", \u2026 {len(empty) - 20} more" if len(empty) > 20 else ""
        out.append(f'<p class="warn">{_plural(len(empty), "class")} without records: {_e(names + more)}</p>')
    return out


def _class_distribution(info: dict, splits: list[str], labels: list[tuple[str, str]], num_classes: int) -> list[str]:
    """The class distribution section: a histogram per labelled split."""
    out = ["<h2>Class distribution</h2>"]
    for split in splits:
        out.extend(_split_histogram(split, info["splits"][split]["label_counts"], labels, num_classes))
    return out


def _rejects(info: dict, max_rows: int) -> list[str]:
    """The rejected, problem and skipped inputs, and the closing of the document."""
    out = ["<h2>Rejected and skipped inputs</h2>", _rows("Rejected", info.get("rejects", []), max_rows)]
    if info.get("problems"):
        out.append(_rows("Problems (not inputs)", info["problems"], max_rows))
    out.append(_rows("Skipped", info.get("skipped", []), max_rows, folded=True))
    out.append(
        '<p class="muted">Every input is a record, a reject or a skipped image; the full lists are in '
        "rejects.tsv and dataset_info.json.</p></body></html>"
    )
    return out


def build_report(
    output_url: str,
    *,
    info: dict | None = None,
    samples_per_split: int = SAMPLES_PER_SPLIT,
    max_rows: int = MAX_ROWS,
) -> str:
    """The HTML report of the converted dataset under ``output_url``."""
    root = Location.of(output_url)
    if info is None:
        info = read_info(root)
        if info is None:
            missing = root.child("dataset_info.json").url
            raise FileNotFoundError(f"{missing}: not found; is {root.url} a converted output?")
    labels = _labels(root)
    splits = _split_order(info)
    num_classes = int(info.get("num_classes") or len(labels))
    sections = [
        _head(info, root, num_classes),
        _counts_table(info, splits),
        _notes(info, splits),
        _sample_grids(root, info, splits, labels, samples_per_split),
        _class_distribution(info, splits, labels, num_classes),
        _rejects(info, max_rows),
    ]
    return "\n".join(part for section in sections for part in section)


def write_report(output_url: str, html_url: str | None = None, **kwargs) -> str:
    """Write the report (default ``<output_url>/report.html``); return where it went."""
    target = Location.of(html_url) if html_url else Location.of(output_url).child("report.html")
    target.write_text(build_report(output_url, **kwargs))
    return target.url
