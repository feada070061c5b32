"""Operators' requests (issue 11): `reindexer yank`, `unyank` and `patch` on a local channel folder (output
lines, exit codes, one-line errors, --dry-run writing nothing), and the same operations asked of the
full-reindex handler, bad requests included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reindexer.config import HandlerSettings
from reindexer.contract import PATCH_INSTRUCTIONS, REPODATA_JSON, Metric, join_key
from reindexer.handlers import full_reindex, runtime
from reindexer.handlers.wiring import Wiring
from reindexer.indexer import index_channel
from reindexer.operations import yank
from reindexer.options import IndexOptions
from reindexer.patches import REVOKED_DEPENDENCY
from reindexer.storage.memory import MemoryStore
from reindexer.store import FatalStoreError
from reindexer.subdir_ref import SubdirRef
from reindexer_cli.cli import main
from reindexer_cli.lambda_events import LocalLambdaContext
from tests.support.archives import index_json, package_bytes
from tests.support.checks import all_records, read_repodata
from tests.support.clock import FakeClock
from tests.support.stores import channel_files

SUBDIR = "linux-64"
A1, A2, B1 = "a-1.0-h0_0.conda", "a-2.0-h0_0.conda", "b-1.0-h0_0.tar.bz2"
PACKAGES = {
    A1: index_json("a", "1.0", depends=["b"]),
    A2: index_json("a", "2.0", depends=["b"]),
    B1: index_json("b", "1.0"),
}
ARCHIVES = {filename: package_bytes(filename, index) for filename, index in PACKAGES.items()}
INSTRUCTIONS = {
    "patch_instructions_version": 1,
    "packages.conda": {A1: {"depends": ["b >=1"]}},
    "remove": [A2],
    "revoke": [B1],
}


def assert_one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reindexer: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], err


# --- the CLI on a local folder ------------------------------------------------------------------------------


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    """A local channel folder, indexed."""
    folder = tmp_path / "channel"
    (folder / SUBDIR).mkdir(parents=True)
    for filename, data in ARCHIVES.items():
        (folder / SUBDIR / filename).write_bytes(data)
    assert main(["index", str(folder)]) == 0
    return folder


def published(channel: Path) -> dict[str, Any]:
    return read_repodata(channel / SUBDIR)


def test_yank_and_unyank_print_one_line_each_and_republish(channel: Path, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    where = channel / SUBDIR

    assert main(["yank", f"{where}/{A2}", "--reason", "miscompiled"]) == 0

    out, err = capsys.readouterr()
    assert (out, err) == (f"yanked {A2} in {where}; republished\n", "")
    assert A2 not in all_records(published(channel))
    assert published(channel)["removed"] == [A2]
    instructions = json.loads((where / PATCH_INSTRUCTIONS).read_bytes())
    assert instructions["remove"] == [A2]
    assert instructions["reindexer_reasons"] == {A2: "miscompiled"}
    assert (where / A2).is_file()  # the package stays

    assert main(["yank", f"{where}/{A2}"]) == 0
    assert capsys.readouterr() == (f"yanked {A2} in {where}: nothing to change\n", "")

    assert main(["unyank", f"{where}/{A2}"]) == 0

    assert capsys.readouterr() == (f"unyanked {A2} in {where}; republished\n", "")
    assert A2 in all_records(published(channel))
    assert published(channel)["removed"] == []


def test_yank_of_several_files_names_them_all_in_one_line(channel: Path, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    where = channel / SUBDIR

    assert main(["yank", f"{where}/{B1}", f"{where}/{A2}"]) == 0

    assert capsys.readouterr().out == f"yanked {B1}, {A2} in {where}; republished\n"
    assert not {A2, B1} & set(all_records(published(channel)))


@pytest.mark.parametrize(
    ("arguments", "code", "words"),
    [
        pytest.param(
            ["yank", "{where}/a-9.0-h0_0.conda"], 1, ["a-9.0-h0_0.conda", "does not exist"], id="unknown"
        ),
        pytest.param(
            ["yank", "{channel}/linux-65/" + A2], 1, ["linux-65", "TARGET/SUBDIR/FILE"], id="subdir"
        ),
        pytest.param(["unyank", A2], 1, ["TARGET/SUBDIR/FILE"], id="no-subdir"),
        pytest.param(
            ["yank", "{where}/readme.txt"], 1, ["readme.txt", "not a package file name"], id="no-package"
        ),
        pytest.param(
            ["yank", "{where}/" + A2, "--reason", "x" * 201], 2, ["--reason", "200"], id="long-reason"
        ),
        pytest.param(["yank", "{where}/" + A2, "--reason", "two\nlines"], 2, ["--reason"], id="two-lines"),
    ],
)
def test_a_refused_yank_exits_with_one_line_and_writes_nothing(
    channel: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], code: int, words: list[str]
):
    before = channel_files(channel)
    capsys.readouterr()
    argv = [part.format(where=channel / SUBDIR, channel=channel) for part in arguments]

    assert main(argv) == code

    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, *words)
    assert channel_files(channel) == before


def test_patch_dry_run_prints_the_changes_and_writes_nothing(
    channel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    file = tmp_path / "instructions.json"
    file.write_text(json.dumps(INSTRUCTIONS))
    before = channel_files(channel)
    capsys.readouterr()

    code = main(["patch", str(channel), "--subdir", SUBDIR, "--file", str(file), "--dry-run"])

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f'  change {A1}: depends: ["b"] → ["b >=1"]',
        f"  remove {A2}",
        f'  change {B1}: depends: [] → ["{REVOKED_DEPENDENCY}"]; revoked: (none) → true',
        "dry run: 3 record(s) would change; nothing written",
    ]
    assert channel_files(channel) == before


def test_patch_installs_the_file_and_republishes(
    channel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    file = tmp_path / "instructions.json"
    file.write_text(json.dumps(INSTRUCTIONS))
    where = channel / SUBDIR
    capsys.readouterr()

    code = main(["patch", str(channel), "--subdir", SUBDIR, "--file", str(file)])

    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == f"installed {file} as {where / PATCH_INSTRUCTIONS}; republished"
    assert len(out.splitlines()) == 4  # three changes, then the line above
    installed = json.loads((where / PATCH_INSTRUCTIONS).read_bytes())
    assert {key: installed[key] for key in INSTRUCTIONS} == INSTRUCTIONS
    records = all_records(published(channel))
    assert sorted(records) == [A1, B1]
    assert records[A1]["depends"] == ["b >=1"]
    assert records[B1]["revoked"] is True

    # The same file again changes nothing and says so.
    assert main(["patch", str(channel), "--subdir", SUBDIR, "--file", str(file)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"installed {file} as {where / PATCH_INSTRUCTIONS}: nothing to change"
    ]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param(b"{", ["not valid JSON"], id="not-json"),
        pytest.param(b'{"patch_instructions_version": 2}', ["version 2"], id="version-2"),
        pytest.param(
            json.dumps({"packages.conda": {A1: {"depends": "b"}}}).encode(),
            [A1, "depends must be a list"],
            id="breaks-a-record",
        ),
    ],
)
def test_a_patch_that_cannot_be_applied_exits_1_with_one_line_and_writes_nothing(
    channel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: list[str]
):
    file = tmp_path / "instructions.json"
    file.write_bytes(content)
    before = channel_files(channel)
    capsys.readouterr()

    code = main(["patch", str(channel), "--subdir", SUBDIR, "--file", str(file)])

    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert_one_error_line(err, *words)
    assert channel_files(channel) == before


def test_patch_of_a_missing_file_exits_1_with_one_line(channel: Path, tmp_path: Path, capsys):
    capsys.readouterr()

    assert main(["patch", str(channel), "--subdir", SUBDIR, "--file", str(tmp_path / "absent.json")]) == 1

    assert_one_error_line(capsys.readouterr().err, "absent.json")


def test_patch_of_a_subdir_not_indexed_yet_exits_1_with_one_line(channel: Path, tmp_path: Path, capsys):
    file = tmp_path / "instructions.json"
    file.write_text(json.dumps(INSTRUCTIONS))
    before = channel_files(channel)
    capsys.readouterr()

    assert main(["patch", str(channel), "--subdir", "osx-arm64", "--file", str(file)]) == 1

    assert_one_error_line(capsys.readouterr().err, "osx-arm64", "has not been indexed yet")
    assert channel_files(channel) == before


def test_yank_refuses_a_stored_file_that_does_not_parse_and_patch_replaces_it(
    channel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Protects an operator's hand-written file: a yank never overwrites what it cannot read; a whole new
    file may replace it."""
    where = channel / SUBDIR
    (where / PATCH_INSTRUCTIONS).write_bytes(b"{ not json")
    capsys.readouterr()

    assert main(["yank", f"{where}/{A2}"]) == 1
    assert_one_error_line(capsys.readouterr().err, PATCH_INSTRUCTIONS, "does not parse")
    assert (where / PATCH_INSTRUCTIONS).read_bytes() == b"{ not json"

    file = tmp_path / "instructions.json"
    file.write_text(json.dumps({"remove": [A2]}))
    assert main(["patch", str(channel), "--subdir", SUBDIR, "--file", str(file)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"  remove {A2}",
        f"installed {file} as {where / PATCH_INSTRUCTIONS}; republished",
    ]
    assert A2 not in all_records(published(channel))


# --- the full-reindex handler's operations ------------------------------------------------------------------

BUCKET = "channel-bucket"


class Handler:
    """The full-reindex handler over a MemoryStore holding an indexed channel at the bucket root."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(BUCKET, clock=self.clock)
        for filename, data in ARCHIVES.items():
            self.store.write(join_key(SUBDIR, filename), data, content_type="application/octet-stream")
        assert index_channel(self.store, "", IndexOptions(clock=self.clock)).ok
        self.opened: list[str] = []
        wiring = Wiring(HandlerSettings(bucket=BUCKET), open_store=self._open, clock=self.clock)
        self.handler = full_reindex.build_handler(wiring)

    def _open(self, bucket: str) -> MemoryStore:
        self.opened.append(bucket)
        return self.store

    def __call__(self, event: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.handler(
            event, LocalLambdaContext(timeout=600, clock=self.clock.monotonic)
        )
        return result

    def records(self) -> dict[str, Any]:
        return all_records(json.loads(self.store.read(join_key(SUBDIR, REPODATA_JSON))[0]))

    def snapshot(self) -> dict[str, str]:
        return {key: stored.etag for key, stored in self.store.objects.items()}


def test_handler_yank_and_unyank_edit_the_instructions_and_republish():
    handler = Handler()

    result = handler({"channel": "", "yank": [f"{SUBDIR}/{A2}"], "reason": "miscompiled"})

    assert result["ok"] is True, result
    assert (result["operation"], result["bucket"], result["channel"]) == ("yank", BUCKET, "")
    subdir = result["subdirs"][SUBDIR]
    assert subdir["changed"] is True and subdir["written"] is True and subdir["error"] is None
    assert A2 not in handler.records()
    instructions = json.loads(handler.store.read(join_key(SUBDIR, PATCH_INSTRUCTIONS))[0])
    assert instructions["reindexer_reasons"] == {A2: "miscompiled"}

    again = handler({"channel": "", "yank": [f"{SUBDIR}/{A2}"]})
    assert again["ok"] is True and again["subdirs"][SUBDIR]["changed"] is False

    back = handler({"channel": "", "unyank": [f"{SUBDIR}/{A2}"]})
    assert back["ok"] is True and back["operation"] == "unyank"
    assert back["subdirs"][SUBDIR]["changed"] is True
    assert A2 in handler.records()
    assert handler.opened == [BUCKET]


def test_handler_patch_installs_instructions_and_republishes():
    handler = Handler()

    result = handler({"channel": "", "patch": {"subdir": SUBDIR, "instructions": INSTRUCTIONS}})

    assert result["ok"] is True, result
    assert result["operation"] == "patch" and result["subdirs"][SUBDIR]["changed"] is True
    records = handler.records()
    assert sorted(records) == [A1, B1]
    assert records[A1]["depends"] == ["b >=1"]
    assert records[B1]["revoked"] is True


def test_handler_yank_of_a_missing_file_answers_one_line_and_writes_nothing():
    handler = Handler()
    before = handler.snapshot()

    result = handler({"channel": "", "yank": [f"{SUBDIR}/a-9.0-h0_0.conda"]})

    assert result["ok"] is False and result["operation"] == "yank"
    assert "a-9.0-h0_0.conda" in result["error"] and "does not exist" in result["error"]
    assert "\n" not in result["error"]
    assert handler.snapshot() == before


A2_ENTRY = f"{SUBDIR}/{A2}"


@pytest.mark.parametrize(
    ("event", "says"),
    [
        pytest.param(
            {"yank": [A2_ENTRY], "unyank": [A2_ENTRY]}, "one operation per request", id="two-operations"
        ),
        pytest.param({"yank": [A2_ENTRY], "patch": {}}, "one operation per request", id="yank-and-patch"),
        pytest.param({"reason": "because"}, '"reason" goes with "yank"', id="reason-alone"),
        pytest.param(
            {"unyank": [A2_ENTRY], "reason": "because"}, '"reason" goes with "yank"', id="reason-unyank"
        ),
        pytest.param({"yank": [A2_ENTRY], "reason": "x" * 201}, "at most 200", id="long-reason"),
        pytest.param({"yank": [A2_ENTRY], "reason": 5}, '"reason"', id="reason-number"),
        pytest.param({"yank": []}, '"yank" must be a list', id="empty-list"),
        pytest.param({"yank": A2_ENTRY}, '"yank" must be a list', id="not-a-list"),
        pytest.param({"unyank": [A2]}, 'is not "<subdir>/<file>"', id="no-subdir"),
        pytest.param({"yank": [f"linux-65/{A2}"]}, 'is not "<subdir>/<file>"', id="unknown-subdir"),
        pytest.param({"yank": [f"{SUBDIR}/"]}, 'is not "<subdir>/<file>"', id="no-file"),
        pytest.param({"yank": [f"{SUBDIR}/x/{A2}"]}, 'is not "<subdir>/<file>"', id="nested"),
        pytest.param({"patch": {"subdir": SUBDIR}}, '"patch" must be', id="patch-without-instructions"),
        pytest.param(
            {"patch": {"subdir": "linux-65", "instructions": {}}}, "unknown subdir", id="patch-unknown-subdir"
        ),
        pytest.param(
            {"patch": {"subdir": SUBDIR, "instructions": {"patch_instructions_version": 2}}},
            "patch instructions refused",
            id="patch-version-2",
        ),
        pytest.param(
            {"patch": {"subdir": SUBDIR, "instructions": {"remove": "x"}}},
            "patch instructions refused",
            id="patch-bad-remove",
        ),
    ],
)
def test_handler_refuses_a_bad_operation_in_one_line_and_touches_nothing(event: dict[str, Any], says: str):
    handler = Handler()
    before = handler.snapshot()

    result = handler({"channel": "", **event})

    assert result["ok"] is False, result
    assert says in result["error"], result["error"]
    assert "\n" not in result["error"]
    assert handler.snapshot() == before
    assert handler.opened == []  # refused before any store was opened


def test_handler_yank_of_no_package_file_name_answers_one_line_and_writes_nothing():
    handler = Handler()
    before = handler.snapshot()

    result = handler({"channel": "", "yank": [f"{SUBDIR}/readme.txt"]})

    assert result["ok"] is False and "not a package file name" in result["error"]
    assert handler.snapshot() == before


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"yank": [A2_ENTRY], "reason": "miscompiled"}, id="yank"),
        pytest.param({"patch": {"subdir": SUBDIR, "instructions": INSTRUCTIONS}}, id="patch"),
    ],
)
def test_handler_dry_run_of_an_operation_says_what_would_change_and_writes_nothing(event: dict[str, Any]):
    """Protects a dry run from taking effect: a written patch_instructions.json would be republished by
    its own notification."""
    handler = Handler()
    before = handler.snapshot()

    result = handler({"channel": "", "dry_run": True, **event})

    assert result["ok"] is True, result
    assert result["subdirs"] == {SUBDIR: {"changed": True}}
    assert handler.snapshot() == before


def test_handler_patch_that_breaks_a_record_is_refused_in_one_line_and_installs_nothing():
    """Protects the channel as `reindexer patch` does: instructions are checked against the subdir's records
    before they are installed, so the answer is never ok for instructions that are not in force."""
    handler = Handler()
    before = handler.snapshot()
    breaking = {"packages.conda": {A1: {"depends": "b"}}}

    result = handler({"channel": "", "patch": {"subdir": SUBDIR, "instructions": breaking}})

    assert result["ok"] is False and result["operation"] == "patch"
    assert f"{A1} after patching: depends must be a list" in result["error"]
    assert "\n" not in result["error"]
    assert handler.snapshot() == before


def test_a_yank_by_an_identity_that_may_not_publish_lands_and_leaves_republishing_to_the_indexer():
    """The stack's operator policy edits patch instructions only: the lease write is refused (403), the edit
    stays, and the notified package-event function republishes."""
    handler = Handler()
    handler.store.fail("PutObject", "*/.reindexer/lease.json", FatalStoreError("access denied (403)"))
    subdir = SubdirRef(handler.store, "", SUBDIR)

    edit = yank(subdir, [A2], "broken", IndexOptions(clock=handler.clock))

    assert edit.report is None
    assert edit.publish_refused is not None and "access denied" in edit.publish_refused
    stored = json.loads(handler.store.read(join_key(SUBDIR, PATCH_INSTRUCTIONS))[0])
    assert stored["remove"] == [A2]
    assert A2 in handler.records(), "not republished by this identity"


def test_the_handler_counts_the_subdirs_whose_instructions_an_operation_changed(monkeypatch):
    handler = Handler()
    counted: list[tuple[str, float]] = []
    monkeypatch.setattr(
        runtime.metrics, "add_metric", lambda name, unit, value: counted.append((name, value))
    )

    handler({"channel": "", "yank": [f"{SUBDIR}/{A2}"]})

    assert (Metric.PATCH_EDITS, 1) in counted
    assert (Metric.SUBDIR_UPDATE_FAILURES, 0) in counted
