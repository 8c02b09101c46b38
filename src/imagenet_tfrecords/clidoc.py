"""docs/cli.md, written from the command line's own parser, so the page cannot drift from ``--help``.

``python -m imagenet_tfrecords.clidoc docs/cli.md`` (``make docs``) writes it; ``--check`` compares
instead and fails naming ``make docs``. The page is the hand-written introduction below, then one
section a command (run, compile and submit come from the Kubeflow side's entry point when it is
installed), each with its description, its example and a table of every option with its default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import parser

INTRO = """\
# Command line

`imagenet-tfrecords COMMAND [options]` (also `python -m imagenet_tfrecords`). This page is generated
from the parser (`make docs`; a test fails when it is stale), so it lists every command and option
as `--help` does.

| exit code | meaning |
| ---: | --- |
| 0 | success |
| 1 | internal error (`-v` shows the traceback) |
| 2 | bad command line: a bad option value, named; options that do not go together; `--train-shards` above \
the number of train images; a `--format tfds` dataset folder name too long for file names |
| 3 | bad input or environment: metadata, an unreadable folder, an output that cannot be used or holds \
files this project did not write, another run writing the output, too many rejects, a bad checksum or unsafe \
archive, no credentials, a host that cannot be reached, a missing optional package |
| 4 | `verify` found a mismatch, or the output is not complete |
| 5 | a worker process died or the run was interrupted: run the same command again to resume |

Options and both URLs are checked before any work starts (for `run`, before the local pipeline
starts). `-v` anywhere on the command line shows kfp.local's logs, debug lines and tracebacks. A
progress bar shows on a terminal (`IMAGENET_TFRECORDS_PROGRESS=1` shows it elsewhere too); otherwise
a command prints a few plain lines. `--data`, `--output` and `OUTPUT` take a local path, `gs://`,
`s3://` or another fsspec URL; credentials come from the environment (see [cluster.md](cluster.md)).

What the commands print: `convert` and `run` end with the records per split, the layout used
(`layout: imagefolder (detected)`), the wall time of the whole run (planning and reports included)
and of the conversion phase alone (first shard started to last one done, the report's figure), and
the rejects; a re-run says how many shards it kept and rates only what it converted. `run` keeps
kfp.local's own log in `OUTPUT/_work/kfp-local.log`; when a step fails it prints that step's
one-line cause and exits with the code above; local runs never retry (a failure on one machine is
deterministic). `verify` checks, without TensorFlow, that the output is complete, every shard's
framing, both CRC32C checksums of every record, its index, its size, the counts against `sizes.txt`
and `dataset_info.json`, and that no file is in the split folders (or named `*.tfrecord*` in the
root) that `dataset_info.json` does not list, and with a resize every image's size against it; errors
name the shard and record. `verify --tf` also
parses every record with TensorFlow and checks the image and one-hot sizes. Sizes in the report are
binary (KiB, MiB, GiB). Nothing is left in the temporary folder.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    names = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices:
        return f"{names} `{{{','.join(str(c) for c in action.choices)}}}`"
    return f"{names} `{action.metavar or action.dest.upper()}`"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if not action.option_strings or action.nargs == 0 or action.default in (None, ""):
        return ""
    return f"`{action.default}`"


def _section(name: str, sp: argparse.ArgumentParser) -> list[str]:
    lines = [f"## `{name}`", "", _cell(sp.description).rstrip(".") + ".", ""]
    if sp.epilog:
        example = sp.epilog.split(":", 1)[1].strip()
        lines += ["```sh", example, "```", ""]
    rows = [a for a in sp._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    if rows:
        lines += ["| option | default | meaning |", "| --- | --- | --- |"]
        for a in rows:
            meaning = _cell((a.help or "") % {"default": a.default, "prog": sp.prog})
            lines.append(f"| {_option(a)} | {_default(a)} | {meaning} |")
        lines.append("")
    return lines


def markdown(p: argparse.ArgumentParser | None = None) -> str:
    p = p or parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    top = [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    lines = [INTRO, "| command | does |", "| --- | --- |"]
    lines += [f"| [`{c.dest}`](#{c.dest}) | {_cell(c.help)} |" for c in sub._choices_actions]
    lines += ["", "Before the command: " + ", ".join(f"`{a.option_strings[-1]}` ({_cell(a.help)})" for a in top), ""]
    for c in sub._choices_actions:
        lines += _section(c.dest, sub.choices[c.dest])
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m imagenet_tfrecords.clidoc", description=__doc__.splitlines()[0])
    ap.add_argument("path", help="the page to write, docs/cli.md")
    ap.add_argument("--check", action="store_true", help="compare with the page instead of writing it")
    args = ap.parse_args(argv)
    text, path = markdown(), Path(args.path)
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is stale: run make docs and commit it", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
