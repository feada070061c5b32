"""The `reindexer` command without S3: exit codes, human and JSON summaries, one-line errors, usage errors
(the channel prefix rule, package size, access mode) and the options handed to the core."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from reindexer import contract
from reindexer.options import IndexOptions
from reindexer.store import StoreError
from reindexer_cli import cli
from reindexer_cli.cli import main
from reindexer_cli.embedded_s3 import free_port
from reindexer_cli.local_stack import LOCAL_CREDENTIALS
from reindexer_cli.targets import parse_target
from tests.support.checks import read_repodata
from tests.support.stores import channel_files, copy_channel

SUBDIRS = ["linux-64", "noarch", "osx-arm64", "win-64"]


@pytest.fixture
def channel(tmp_path, small_channel) -> Path:
    return copy_channel(small_channel[0], tmp_path / "channel")


def assert_one_error_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reindexer: error:")
    assert "Traceback" not in err


def test_index_local_folder_exits_0_with_a_human_summary(channel, small_channel, capsys):
    code = main(["index", str(channel)])

    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    assert f"Indexed {channel}" in out
    for subdir in SUBDIRS:
        count = sum(1 for p in small_channel[1] if p.subdir == subdir)
        assert f"  {subdir}: add {count}, update 0, remove 0, unchanged 0, rejected 0; written" in out
    assert "  channel files: channeldata.json, index.html\n" in out
    assert "requests (" in out
    assert (channel / "linux-64" / "repodata.json").is_file()


def test_second_run_reports_nothing_to_write(channel, capsys):
    assert main(["index", str(channel)]) == 0
    capsys.readouterr()

    assert main(["index", str(channel)]) == 0

    out, _ = capsys.readouterr()
    assert "linux-64: add 0, update 0, remove 0, unchanged 6, rejected 0; nothing to write" in out
    assert "channel files:" not in out  # current: not made again, so nothing to say


def test_rejected_files_are_listed_in_the_summary(channel, capsys):
    (channel / "linux-64" / "broken-1.0-h0_0.conda").write_bytes(b"garbage")

    code = main(["index", str(channel)])

    out, _ = capsys.readouterr()
    assert code == 0
    assert "    rejected broken-1.0-h0_0.conda: not a valid .conda (zip) archive" in out


def test_json_mode_logs_one_line_per_rejected_file_and_keeps_stdout_machine_readable(channel, capsys, caplog):
    (channel / "linux-64" / "broken-1.0-h0_0.conda").write_bytes(b"garbage")

    code = main(["index", str(channel), "--json"])

    out, _ = capsys.readouterr()
    assert code == 0
    summary = json.loads(out)
    assert summary["subdirs"]["linux-64"]["rejected"][0]["file"] == "broken-1.0-h0_0.conda"
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert [line for line in warnings if "broken" in line] == [
        "rejected linux-64/broken-1.0-h0_0.conda: not a valid .conda (zip) archive: File is not a zip file"
    ]


def test_json_prints_exactly_one_json_object(channel, capsys):
    code = main(["index", str(channel), "--json"])

    out, _ = capsys.readouterr()
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    summary = json.loads(out)
    assert isinstance(summary, dict)
    assert summary["ok"] is True
    assert summary["dry_run"] is False
    assert sorted(summary["subdirs"]) == SUBDIRS
    for report in summary["subdirs"].values():
        assert {"added", "removed", "unchanged", "rejected", "updated", "written"} <= set(report)
    assert len(summary["subdirs"]["linux-64"]["added"]) == 6
    assert summary["rejected"] == []
    assert summary["requests"]["write"] > 0
    assert isinstance(summary["seconds"], (int, float))


def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    code = main(["index", str(tmp_path / "nowhere")])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert_one_error_line(err)
    assert "nowhere" in err


def test_unknown_subdir_is_a_usage_error(channel, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["index", str(channel), "--subdir", "linux-65"])

    assert exit_info.value.code == 2
    assert "unknown subdir 'linux-65'" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["http://x", "ftp://host/chan", "s3://"])
def test_bad_target_is_a_one_line_error(target, capsys):
    code = main(["index", target])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert_one_error_line(err)


def test_dry_run_writes_nothing_and_prints_the_plan(channel, capsys):
    before = channel_files(channel)

    code = main(["index", str(channel), "--dry-run"])

    out, _ = capsys.readouterr()
    assert code == 0
    assert channel_files(channel) == before
    assert f"Planned {channel}" in out
    assert "linux-64: would add 6, would update 0, would remove 0" in out
    assert "    would add sample-linux64-0000-1.4.8-h0000001_1.tar.bz2" in out


def test_subdir_option_indexes_only_that_subdir_and_noarch(channel, capsys):
    assert main(["index", str(channel), "--subdir", "win-64", "--json"]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert sorted(summary["subdirs"]) == ["noarch", "win-64"]
    assert not (channel / "linux-64" / "repodata.json").exists()


def test_base_url_option_writes_repodata_version_2_with_the_subdir_appended(channel, capsys):
    assert main(["index", str(channel), "--base-url", "https://cdn.example.org/chan"]) == 0

    repodata = read_repodata(channel / "noarch")
    assert repodata["repodata_version"] == 2
    assert repodata["info"]["base_url"] == "https://cdn.example.org/chan/noarch/"


@pytest.mark.parametrize("option", [["--jobs", "0"], ["--jobs", "x"], ["--repodata-max-age", "-1"]])
def test_invalid_numbers_are_usage_errors(channel, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["index", str(channel), *option])

    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [("s3://bucket", "bucket", ""), ("s3://bucket/org/dev/", "bucket", "org/dev")],
)
def test_parse_target_splits_bucket_and_prefix(text, bucket, prefix):
    target = parse_target(text)

    assert (target.bucket, target.prefix, target.folder) == (bucket, prefix, None)


def test_parse_target_treats_other_text_as_a_folder():
    target = parse_target("some/folder")

    assert (target.bucket, target.folder) == (None, Path("some/folder"))


# --- the channel prefix rule, package size and private channels ---------------------------------------


@pytest.fixture
def no_store(monkeypatch):
    """Fails the test if the command gets as far as opening the target."""

    def open_store(target, args):
        raise AssertionError(f"opened {target}")

    monkeypatch.setattr(cli, "open_store", open_store)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("s3://bucket/a//b", "has an empty segment"),
        ("s3://bucket/../x", "has a segment starting with '.'"),
        ("s3://bucket/org/.reindexer", "has a segment starting with '.'"),
        ("s3://bucket/team a", "may only hold letters"),
        ("s3://bucket/" + "x" * 300, "is longer than 256 characters"),
    ],
)
def test_s3_target_whose_prefix_breaks_the_channel_rule_is_a_one_line_usage_error(
    target, reason, no_store, capsys
):
    code = main(["index", target])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert_one_error_line(err)
    assert err.startswith("reindexer: error: channel prefix '")
    assert reason in err


def test_surrounding_slashes_of_an_s3_prefix_are_forgiven(monkeypatch, capsys):
    opened = []

    def open_store(target, args):
        opened.append(target.prefix)
        raise StoreError("stop here")

    monkeypatch.setattr(cli, "open_store", open_store)

    assert main(["index", "s3://bucket//org/dev/"]) == 1
    assert opened == ["org/dev"]


def test_a_local_folder_is_not_held_to_the_channel_prefix_rule(tmp_path, small_channel, capsys):
    folder = copy_channel(small_channel[0], tmp_path / "my channel (copy)")

    assert main(["index", str(folder)]) == 0


@pytest.fixture
def given_options(monkeypatch) -> list[IndexOptions]:
    """The options `reindexer index` hands the core, which still runs."""
    given: list[IndexOptions] = []
    original = cli.index_channel

    def index_channel(store, prefix, options):
        given.append(options)
        return original(store, prefix, options)

    monkeypatch.setattr(cli, "index_channel", index_channel)
    return given


def test_defaults_are_the_contracts_package_size_and_public(channel, given_options, capsys):
    assert main(["index", str(channel)]) == 0

    (options,) = given_options
    assert options.max_package_bytes == contract.DEFAULT_MAX_PACKAGE_MB * 1024 * 1024
    assert options.settings.private is False
    assert options.settings.repodata_cache_control == "public, max-age=60"


def test_max_package_size_and_private_reach_the_index_options(channel, given_options, capsys):
    assert main(["index", str(channel), "--max-package-size", "3", "--private"]) == 0

    (options,) = given_options
    assert options.max_package_bytes == 3 * 1024 * 1024
    assert options.settings.private is True
    assert options.settings.repodata_cache_control == "private, max-age=60"


@pytest.mark.parametrize("size", ["0", "-1", "1.5", "1GB", str(contract.MAX_PACKAGE_MB_LIMIT + 1)])
def test_bad_max_package_size_is_a_usage_error(channel, size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["index", str(channel), "--max-package-size", size])

    assert exit_info.value.code == 2
    assert "--max-package-size" in capsys.readouterr().err


def test_max_package_size_may_be_the_limit(channel, given_options, capsys):
    assert main(["index", str(channel), "--max-package-size", str(contract.MAX_PACKAGE_MB_LIMIT)]) == 0

    assert given_options[0].max_package_bytes == contract.MAX_PACKAGE_MB_LIMIT * 1024 * 1024


@pytest.mark.parametrize("channel_option", ["../x", "a//b", ".reindexer", "team a"])
def test_local_channel_breaking_the_prefix_rule_is_a_usage_error(channel_option, monkeypatch, capsys):
    monkeypatch.setattr(cli, "run_local", lambda args: pytest.fail("the stack was started"))

    with pytest.raises(SystemExit) as exit_info:
        main(["local", "--channel", "dev", "--channel", channel_option])

    assert exit_info.value.code == 2
    assert f"--channel {channel_option!r}" in capsys.readouterr().err


@pytest.mark.parametrize("access", ["secret", "Private"])
def test_local_access_must_be_an_access_mode(access, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["local", "--access", access])

    assert exit_info.value.code == 2


@pytest.fixture
def local_command_side_effects(monkeypatch):
    """What `reindexer local` changes in its own process, put back afterwards: its SIGINT and SIGTERM
    handlers, and the placeholder credentials it sets for the AWS SDKs."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for name in LOCAL_CREDENTIALS:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("local_command_side_effects")
def test_local_without_moto_installed_says_so_in_one_line(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    asked: list[str] = []

    def without_moto(name: str, package: str | None = None) -> ModuleSpec | None:
        if name == "moto" or name.startswith("moto."):
            asked.append(name)
            return None
        return find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_moto)

    code = main(["local", "--port", str(free_port())])

    out, err = capsys.readouterr()
    assert asked, "the local command did not look for moto"
    assert code == 1
    assert_one_error_line(err)
    assert err.strip() == (
        "reindexer: error: the embedded S3 server needs moto, which is not installed: "
        "pip install 'reindexer[local]'"
    )
    assert "ready:" not in out
