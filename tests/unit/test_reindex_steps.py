"""The fan-out's Lambda handlers (reindexer.handlers.reindex_steps) on a MemoryStore: a request that is not
valid ends the run with one line; a batch with packages left raises the error the state machine retries, and
the retry reads only those; a commit that could not publish raises its retried error; the commit's answer
says whether the run is complete and, when not, why in one line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reindexer.channel_events import CollectingSink
from reindexer.config import HandlerSettings
from reindexer.contract import BATCH_INCOMPLETE_ERROR, COMMIT_INCOMPLETE_ERROR, STATE_FILE, join_key
from reindexer.handlers import full_reindex, reindex_steps
from reindexer.handlers.wiring import Wiring
from reindexer.reindex_runs import RunInputError
from reindexer.storage.memory import MemoryStore
from reindexer.store import TransientStoreError
from reindexer_cli.lambda_events import LocalLambdaContext
from tests.support.archives import index_json, package_bytes
from tests.support.clock import FakeClock

BUCKET = "channel-bucket"
CHANNEL = "team/dev"
EXECUTION = "nightly-1"


class Steps:
    """A channel of `count` linux-64 and noarch packages (one broken) and the three step handlers."""

    def __init__(self, count: int = 6) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(BUCKET, clock=self.clock)
        for i in range(count):
            self.put("linux-64" if i % 2 else "noarch", f"p{i}-1.0-h0_0.conda")
        self.store.write(
            join_key(CHANNEL, "linux-64", "broken-1.0-h0_0.conda"),
            b"not a zip",
            content_type="application/zip",
        )
        self.sink = CollectingSink()
        self.wiring = Wiring(
            HandlerSettings(bucket=BUCKET),
            open_store=lambda bucket: self.store,
            clock=self.clock,
            events=self.sink,
        )

    def put(self, subdir: str, name: str) -> None:
        package, version, build = name.removesuffix(".conda").rsplit("-", 2)
        data = package_bytes(name, index_json(package, version, build, subdir=subdir))
        self.store.write(join_key(CHANNEL, subdir, name), data, content_type="application/octet-stream")

    def call(self, build: Any, event: Any) -> dict[str, Any]:
        context = LocalLambdaContext(timeout=900, clock=self.clock.monotonic)
        answer: dict[str, Any] = build(self.wiring)(event, context)
        return answer

    def plan(self, request: Any, execution: Any = EXECUTION) -> dict[str, Any]:
        return self.call(reindex_steps.build_plan_handler, {"request": request, "execution": execution})

    def batches(self, plan: dict[str, Any], size: int) -> list[dict[str, Any]]:
        """The ItemBatcher's child inputs over the plan's manifest."""
        items = json.loads(self.store.read(plan["manifest"]["key"])[0])
        batch_input = {key: plan[key] for key in ("bucket", "channel", "run")}
        return [
            {"Items": items[start : start + size], "BatchInput": batch_input}
            for start in range(0, len(items), size)
        ]

    def read(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.call(reindex_steps.build_read_handler, batch)

    def commit(self, plan: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return self.call(reindex_steps.build_commit_handler, {**plan, **extra})

    def package_reads(self) -> list[str]:
        seen: list[str] = []
        self.store.on("GetObject", "*.conda", lambda operation, key: seen.append(key))
        return seen


def repodata_names(store: MemoryStore, subdir: str) -> set[str]:
    document = json.loads(store.read(join_key(CHANNEL, subdir, "repodata.json"))[0])
    return set(document["packages.conda"]) | set(document["packages"])


@pytest.mark.parametrize(
    ("request_", "execution", "reason"),
    [
        ({}, EXECUTION, "channel"),
        ({"channel": CHANNEL, "subdirs": "linux-64"}, EXECUTION, "subdirs"),
        ({"channel": CHANNEL, "force": "yes"}, EXECUTION, "force"),
        (
            {"channel": CHANNEL, "yank": ["linux-64/p1-1.0-h0_0.conda"], "reason": "broken"},
            EXECUTION,
            "full-reindex function",
        ),
        ({"channel": CHANNEL, "dry_run": True}, EXECUTION, "full-reindex function"),
        ("team/dev", EXECUTION, "object"),
        ({"channel": CHANNEL}, "", "execution"),
    ],
)
def test_a_request_that_is_not_valid_ends_the_run_with_one_line_and_writes_nothing(
    request_: Any, execution: str, reason: str
) -> None:
    steps = Steps()
    before = dict(steps.store.objects)

    answer = steps.plan(request_, execution)

    assert answer["ok"] is False
    assert reason in answer["error"] and "\n" not in answer["error"]
    assert steps.store.objects.keys() == before.keys()


def test_plan_read_and_commit_publish_every_package_and_announce_them() -> None:
    steps = Steps()

    plan = steps.plan({"channel": CHANNEL})
    assert plan["ok"] is True and plan["items"] == 7 and plan["by_subdir"] == {"linux-64": 4, "noarch": 3}
    assert plan["run"].endswith(EXECUTION) and plan["manifest"]["bucket"] == BUCKET
    counts = [steps.read(batch) for batch in steps.batches(plan, size=3)]
    assert sum(c["indexed"] for c in counts) == 6 and sum(c["rejected"] for c in counts) == 1
    answer = steps.commit(plan)

    assert answer["complete"] is True and answer["summary"] == "complete"
    assert repodata_names(steps.store, "linux-64") == {
        "p1-1.0-h0_0.conda",
        "p3-1.0-h0_0.conda",
        "p5-1.0-h0_0.conda",
    }
    assert len(repodata_names(steps.store, "noarch")) == 3
    indexed = [event for event in steps.sink.events if event.detail_type == "Package Indexed"]
    assert len(indexed) == 6
    # The run's objects went with the commit.
    assert not [key for key in steps.store.objects if "/.reindexer/runs/" in key]


def test_a_batch_with_packages_not_read_raises_the_retried_error_and_the_retry_reads_only_those() -> None:
    steps = Steps()
    plan = steps.plan({"channel": CHANNEL})
    (batch,) = steps.batches(plan, size=10)
    throttled = join_key(CHANNEL, "noarch", "p2-1.0-h0_0.conda")
    steps.store.fail("GetObject", throttled, TransientStoreError("SlowDown (503)"), times=None)

    with pytest.raises(reindex_steps.BatchIncompleteError) as raised:
        steps.read(batch)

    assert type(raised.value).__name__ == BATCH_INCOMPLETE_ERROR
    assert "1 of 7 packages not read yet" in str(raised.value) and "SlowDown" in str(raised.value)
    steps.store.hooks.clear()
    reads = steps.package_reads()
    answer = steps.read(batch)
    assert reads == [throttled]
    assert answer["resumed"] == 6 and answer["indexed"] == 6 and answer["failed"] == []


def test_a_batch_that_is_not_a_batch_is_refused_with_one_line() -> None:
    steps = Steps()
    plan = steps.plan({"channel": CHANNEL})
    (batch,) = steps.batches(plan, size=10)
    for broken in (
        {"Items": batch["Items"]},
        {**batch, "Items": []},
        {**batch, "Items": [{"subdir": "linux-64"}]},
        {**batch, "BatchInput": {**batch["BatchInput"], "run": "../../elsewhere"}},
    ):
        with pytest.raises(RunInputError) as raised:
            steps.read(broken)
        assert "\n" not in str(raised.value)


def test_a_commit_that_cannot_publish_raises_the_retried_error_and_the_retry_commits() -> None:
    steps = Steps()
    plan = steps.plan({"channel": CHANNEL})
    for batch in steps.batches(plan, size=4):
        steps.read(batch)
    state = join_key(CHANNEL, "linux-64", STATE_FILE)
    steps.store.fail("PutObject", state, TransientStoreError("SlowDown (503)"), times=None)

    with pytest.raises(reindex_steps.CommitIncompleteError) as raised:
        steps.commit(plan)

    assert type(raised.value).__name__ == COMMIT_INCOMPLETE_ERROR
    assert "linux-64" in str(raised.value)
    steps.store.hooks.clear()
    reads = steps.package_reads()
    answer = steps.commit(plan)
    assert answer["complete"] is True
    # The batches' results were still there: the retry read no package again.
    assert reads == []
    assert len(repodata_names(steps.store, "linux-64")) == 3


def test_a_commit_after_a_failed_map_reads_what_it_left_but_ends_the_run_failed_with_the_reason() -> None:
    steps = Steps()
    plan = steps.plan({"channel": CHANNEL})
    first, _ = steps.batches(plan, size=4)
    steps.read(first)
    read_error = {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "a batch failed"}

    answer = steps.commit(plan, read_error=read_error)

    assert answer["complete"] is False
    assert answer["summary"].startswith(
        "incomplete: the read map failed (States.ExceedToleratedFailureThreshold"
    )
    assert "start the reindex again" in answer["summary"]
    # What the failed batch left was read by the commit: the channel is whole all the same.
    assert len(repodata_names(steps.store, "linux-64")) == 3
    assert len(repodata_names(steps.store, "noarch")) == 3


def test_a_run_with_nothing_to_read_commits_without_a_manifest() -> None:
    steps = Steps()
    first = steps.plan({"channel": CHANNEL})
    for batch in steps.batches(first, size=10):
        steps.read(batch)
    steps.commit(first)

    again = steps.plan({"channel": CHANNEL}, execution="nightly-2")
    assert again["ok"] is True and again["items"] == 0 and again["manifest"] is None
    answer = steps.commit(again)

    assert answer["complete"] is True and answer["summary"] == "complete"
    assert not [key for key in steps.store.objects if "/.reindexer/runs/" in key]


def test_the_commits_answer_stays_small_whatever_the_channel_holds() -> None:
    # It is the execution's output, which Step Functions refuses over 256 KiB: counts, not file lists.
    steps = Steps(count=0)
    long = "x" * 100
    for i in range(2000):
        steps.put("noarch", f"{long}{i}-1.0-h0_0.conda")
    plan = steps.plan({"channel": CHANNEL})
    for batch in steps.batches(plan, size=500):
        steps.read(batch)

    answer = steps.commit(plan)

    assert answer["complete"] is True
    assert answer["subdirs"]["noarch"]["added"] == 2000
    assert len(json.dumps(answer)) < 4096


def test_a_full_runs_log_line_and_answer_show_the_first_files_of_a_long_list_and_its_length() -> None:
    # One log line is one CloudWatch Logs event, an answer at most 6 MB: a cold index of 100,000 packages
    # would fit in neither.
    report: dict[str, Any] = {
        "added": [f"p{i}-1-0.conda" for i in range(5000)],
        "removed": ["gone-1-0.conda"],
        "seconds": 1.0,
    }

    line = full_reindex.cut_lists(report, 50)

    assert line["added"] == report["added"][:50] and line["added_count"] == 5000
    assert line["removed"] == ["gone-1-0.conda"] and "removed_count" not in line
    assert line["seconds"] == 1.0


def test_the_full_reindex_functions_answer_shows_the_first_files_of_a_long_list_and_its_length() -> None:
    # The function next to the state machine: its answer to the console must stay under Lambda's 6 MB.
    steps = Steps(count=0)
    for i in range(full_reindex.ANSWERED_FILES + 100):
        steps.put("noarch", f"p{i}-1.0-h0_0.conda")

    answer = steps.call(full_reindex.build_handler, {"channel": CHANNEL})

    noarch = answer["subdirs"]["noarch"]
    assert answer["complete"] is True
    assert len(noarch["added"]) == full_reindex.ANSWERED_FILES
    assert noarch["added_count"] == full_reindex.ANSWERED_FILES + 100
