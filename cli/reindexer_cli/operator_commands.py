"""`reindexer yank`, `unyank` and `patch`: operators fix a published channel without touching packages
(reindexer.operations edits the subdir's patch_instructions.json by compare-and-swap and republishes)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reindexer.layout import KNOWN_SUBDIRS
from reindexer.operations import (
    Edit,
    OperationError,
    check_package_files,
    install_patch,
    preview_patch,
    unyank,
    yank,
)
from reindexer.options import IndexOptions
from reindexer.patches import MAX_INSTRUCTIONS_BYTES, PatchError, PatchInstructions
from reindexer.records import RecordJson, decode_record
from reindexer.store import StoreError
from reindexer.subdir_ref import SubdirRef

from .targets import add_s3_options, open_store, parse_target

MAX_REASON_LENGTH = 200


def add_parsers(commands: Any) -> None:
    """The three commands, on the `reindexer` parser's subcommands."""
    for name, summary in (
        ("yank", "take package files out of the index (solvers stop choosing them); the files stay"),
        ("unyank", "bring yanked package files back into the index"),
    ):
        command = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        command.add_argument(
            "files",
            nargs="+",
            metavar="TARGET/SUBDIR/FILE",
            help="e.g. s3://bucket/channel/linux-64/x-1-0.conda",
        )
        if name == "yank":
            command.add_argument("--reason", help="kept beside the instruction, shown by reindexer status")
        add_s3_options(command)
    patch = commands.add_parser(
        "patch",
        help="install a subdir's patch_instructions.json (conda's format) after checking it",
        description="Validate patch instructions against the subdir's records, install them as "
        "<subdir>/patch_instructions.json and republish; --dry-run prints the records they change.",
    )
    patch.add_argument("target", metavar="TARGET", help="s3://BUCKET/PREFIX or a local channel folder")
    patch.add_argument("--subdir", required=True, choices=sorted(KNOWN_SUBDIRS), metavar="NAME")
    patch.add_argument("--file", required=True, type=Path, help="the instructions (JSON)")
    patch.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    add_s3_options(patch)


def run_yank(args: argparse.Namespace, *, back: bool = False) -> int:
    """yank (or, with back, unyank) each named file; one line per subdir, exit 1 on the first failure."""
    reason = getattr(args, "reason", None)
    if reason is not None and (len(reason) > MAX_REASON_LENGTH or not reason.isprintable()):
        print(f"reindexer: error: --reason must be one line of at most {MAX_REASON_LENGTH}", file=sys.stderr)
        return 2
    try:
        groups = [
            (_subdir(target_text, subdir_name, args), names)
            for (target_text, subdir_name), names in _by_subdir(args.files).items()
        ]
        # Every file is checked before any subdir is edited, so a typo cannot leave the edit half done.
        for subdir, names in groups:
            check_package_files(subdir, names, must_exist=not back)
        for subdir, names in groups:
            options = IndexOptions()
            edit = unyank(subdir, names, options) if back else yank(subdir, names, reason, options)
            verb = "unyanked" if back else "yanked"
            _say_edit(edit, f"{verb} {', '.join(names)} in {subdir.describe()}")
    except (OperationError, PatchError, StoreError, ValueError) as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    return 0


def run_patch(args: argparse.Namespace) -> int:
    try:
        instructions = _read_instructions(args.file)
        subdir = _subdir(args.target, args.subdir, args)
        changes = preview_patch(subdir, instructions)
        for line in describe_changes(changes):
            print(line)
        if args.dry_run:
            print(f"dry run: {len(changes)} record(s) would change; nothing written")
            return 0
        edit = install_patch(subdir, instructions, IndexOptions())
        _say_edit(edit, f"installed {args.file} as {subdir.describe('patch_instructions.json')}")
    except (OperationError, PatchError, StoreError, ValueError, OSError) as error:
        print(f"reindexer: error: {error}", file=sys.stderr)
        return 1
    return 0


def describe_changes(changes: Iterable[tuple[str, RecordJson | None, RecordJson | None]]) -> list[str]:
    """One line per changed record: removed, back, or the fields that change (old → new)."""
    lines = []
    for filename, before, after in changes:
        if after is None:
            lines.append(f"  remove {filename}")
        elif before is None:
            lines.append(f"  add back {filename}")
        else:
            old, new = decode_record(before), decode_record(after)
            fields = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
            shown = "; ".join(f"{key}: {_show(old.get(key))} → {_show(new.get(key))}" for key in fields)
            lines.append(f"  change {filename}: {shown}")
    return lines


def _show(value: Any) -> str:
    text = "(none)" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:119] + "…"


def _read_instructions(path: Path) -> PatchInstructions:
    if path.stat().st_size > MAX_INSTRUCTIONS_BYTES:
        raise PatchError(f"{path} is over the limit of {MAX_INSTRUCTIONS_BYTES} bytes")
    return PatchInstructions.parse(path.read_bytes())


def _by_subdir(paths: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """`TARGET/SUBDIR/FILE` arguments grouped by target and subdir."""
    groups: dict[tuple[str, str], list[str]] = {}
    for text in paths:
        parts = text.rstrip("/").rsplit("/", 2)
        if len(parts) != 3 or parts[1] not in KNOWN_SUBDIRS:
            raise OperationError(f"{text!r} is not TARGET/SUBDIR/FILE with a known conda subdir")
        groups.setdefault((parts[0], parts[1]), []).append(parts[2])
    return groups


def _subdir(target_text: str, subdir: str, args: argparse.Namespace) -> SubdirRef:
    target = parse_target(target_text)
    return SubdirRef(open_store(target, args), target.prefix, subdir)


def _say_edit(edit: Edit, what: str) -> None:
    if edit.after == edit.before:
        print(f"{what}: nothing to change")
        return
    if edit.publish_refused is not None:
        print(
            f"{what}; the channel's indexer republishes on the file's notification "
            f"(these credentials may not publish: {edit.publish_refused})"
        )
        return
    report = edit.report
    if report is None or report.error:
        raise StoreError(f"{what}, but republishing failed: {report.error if report else 'not run'}")
    print(f"{what}; republished")
    for problem in report.patch_problems:
        print(f"  warning: {problem}")
