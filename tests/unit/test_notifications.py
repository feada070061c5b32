"""Parsing S3 notifications in every shape a deployment can route them, and locating package keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from reindexer.contract import channel_prefix_problem
from reindexer.notifications import MalformedEventError, PackageLocation, locate, parse_event
from tests.support.events import load_event

BUCKET = "channel-bucket"


def keys_by_message(event: dict[str, Any]) -> dict[str | None, list[str]]:
    parsed = parse_event(event)
    found: dict[str | None, list[str]] = {}
    for notice in parsed.notices:
        found.setdefault(notice.message_id, []).append(notice.key)
    return found


# --- SQS batches of S3 event messages (the deployed route) -------------------------------------------


def test_sqs_batch_yields_one_notice_per_message_with_its_message_id_and_bucket() -> None:
    event = load_event("sqs_s3_object_created.json")

    parsed = parse_event(event)

    assert parsed.from_sqs
    assert parsed.malformed == []
    assert [notice.message_id for notice in parsed.notices] == [r["messageId"] for r in event["Records"]]
    assert {notice.bucket for notice in parsed.notices} == {BUCKET}
    assert parsed.notices[0].event_time == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)


def test_sqs_keys_are_url_decoded_with_unquote_plus_semantics() -> None:
    keys = [notice.key for notice in parse_event(load_event("sqs_s3_object_created.json")).notices]

    assert keys == [
        # '%2B' is a literal '+', as in conda's local version segments
        "linux-64/sample-linux64-0001-3.9.6+local-h0000015_0.tar.bz2",
        # a '+' in the message stands for a space
        "team a/noarch/tool-1.0-pyh0_0.conda",
        # any other escape is decoded too, UTF-8 included
        "org/dev/osx-arm64/café-1!2.0-h0_0.conda",
    ]


def test_sqs_object_removed_message_yields_the_decoded_key() -> None:
    parsed = parse_event(load_event("sqs_s3_object_removed.json"))

    assert [(n.bucket, n.key, n.message_id) for n in parsed.notices] == [
        (BUCKET, "org/dev/linux-64/x-1.0+cuda12-h0_0.conda", "7a3e1c90-55b2-4f0e-8d43-2c1b0a9f8e01")
    ]
    assert parsed.malformed == []


def test_s3_test_event_yields_nothing_and_is_not_malformed() -> None:
    parsed = parse_event(load_event("sqs_s3_test_event.json"))

    assert parsed.from_sqs
    assert parsed.notices == []
    assert parsed.malformed == []


def test_malformed_sqs_bodies_are_set_aside_with_their_message_id() -> None:
    event = load_event("sqs_malformed_bodies.json")
    good, *bad = event["Records"]

    parsed = parse_event(event)

    assert parsed.from_sqs
    assert [(n.message_id, n.key) for n in parsed.notices] == [
        (good["messageId"], "linux-64/sample-linux64-0000-1.4.8-h0000001_1.tar.bz2")
    ]
    assert [message_id for message_id, _ in parsed.malformed] == [record["messageId"] for record in bad]
    for _, reason in parsed.malformed:
        assert reason
        assert "\n" not in reason


def test_message_whose_object_key_is_not_a_string_is_set_aside_not_raised() -> None:
    event = load_event("sqs_key_not_a_string.json")
    good, bad = event["Records"]

    parsed = parse_event(event)

    assert [n.message_id for n in parsed.notices] == [good["messageId"]]
    assert [message_id for message_id, _ in parsed.malformed] == [bad["messageId"]]


def test_malformed_message_does_not_drop_notices_of_later_messages() -> None:
    event = load_event("sqs_malformed_bodies.json")
    event["Records"].reverse()

    parsed = parse_event(event)

    assert len(parsed.notices) == 1
    assert len(parsed.malformed) == len(event["Records"]) - 1


def test_sqs_message_carrying_an_eventbridge_event_is_parsed() -> None:
    """S3 -> EventBridge -> SQS: the message body is the EventBridge event."""
    template = load_event("sqs_s3_object_created.json")["Records"][0]
    message = {**template, "body": json.dumps(load_event("eventbridge_object_deleted.json"))}

    parsed = parse_event({"Records": [message]})

    assert [(n.key, n.message_id) for n in parsed.notices] == [
        ("noarch/sample-noarch-0000-2.2.1-h0000004_1.conda", template["messageId"])
    ]


# --- direct S3 events and EventBridge events ---------------------------------------------------------


def test_direct_s3_event_yields_decoded_keys_and_is_not_from_sqs() -> None:
    parsed = parse_event(load_event("s3_direct_event.json"))

    assert not parsed.from_sqs
    assert [(n.bucket, n.key, n.message_id) for n in parsed.notices] == [
        (BUCKET, "noarch/sample-noarch-0000-1.6.6+local-h0000000_0.conda", None)
    ]


def test_eventbridge_encoded_key_yields_decoded_and_raw_candidates() -> None:
    parsed = parse_event(load_event("eventbridge_object_created.json"))

    assert not parsed.from_sqs
    assert [n.key for n in parsed.notices] == [
        "osx-arm64/sample-osxarm64-0001-1.8.4+local-h000000e_2.conda",
        "osx-arm64/sample-osxarm64-0001-1.8.4%2Blocal-h000000e_2.conda",
    ]
    assert {n.bucket for n in parsed.notices} == {BUCKET}
    assert parsed.notices[0].event_time == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_eventbridge_literal_plus_yields_both_space_and_plus_readings() -> None:
    event = load_event("eventbridge_object_created.json")
    event["detail"]["object"]["key"] = "linux-64/x-1.0+local-h0_0.conda"

    keys = [n.key for n in parse_event(event).notices]

    assert keys == ["linux-64/x-1.0 local-h0_0.conda", "linux-64/x-1.0+local-h0_0.conda"]


def test_eventbridge_key_without_escapes_yields_a_single_notice() -> None:
    parsed = parse_event(load_event("eventbridge_object_deleted.json"))

    assert [n.key for n in parsed.notices] == ["noarch/sample-noarch-0000-2.2.1-h0000004_1.conda"]


def test_eventbridge_event_of_another_detail_type_yields_nothing() -> None:
    event = load_event("eventbridge_object_created.json")
    event["detail-type"] = "Object Restore Completed"

    assert parse_event(event).notices == []


def test_eventbridge_event_without_object_key_is_malformed() -> None:
    event = load_event("eventbridge_object_deleted.json")
    del event["detail"]["object"]

    with pytest.raises(MalformedEventError):
        parse_event(event)


@pytest.mark.parametrize(
    "event",
    [
        {"channel": "dev"},
        {"Records": "not a list"},
        {"Records": [{"eventSource": "aws:dynamodb"}]},
        {"Records": [{"eventSource": "aws:sqs", "body": "{}"}, {"eventSource": "aws:s3"}]},
        {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": BUCKET}}}]},
    ],
    ids=["console-test-event", "records-not-a-list", "foreign-record", "mixed-records", "no-key"],
)
def test_non_sqs_event_of_unknown_shape_raises_malformed_event_error(event: dict[str, Any]) -> None:
    with pytest.raises(MalformedEventError):
        parse_event(event)


# --- locate: which keys are packages of which channel and subdir -------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("linux-64/x-1-0.conda", PackageLocation("", "linux-64", "x-1-0.conda")),
        ("noarch/x-1.0+local-py_0.tar.bz2", PackageLocation("", "noarch", "x-1.0+local-py_0.tar.bz2")),
        ("dev/osx-arm64/x-1-0.conda", PackageLocation("dev", "osx-arm64", "x-1-0.conda")),
        ("org/dev/linux-64/x-1-0.conda", PackageLocation("org/dev", "linux-64", "x-1-0.conda")),
        ("team a/win-64/x-1-0.tar.bz2", PackageLocation("team a", "win-64", "x-1-0.tar.bz2")),
    ],
)
def test_locate_splits_channel_subdir_and_filename(key: str, expected: PackageLocation) -> None:
    assert locate(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        "linux-65/x-1-0.conda",  # unknown subdir
        "org/dev/packages/x-1-0.conda",  # folder that is no subdir
        "x-1-0.conda",  # channel root, no subdir at all
        "linux-64/repodata.json",  # our own output
        "linux-64/repodata.json.zst",
        "linux-64/notes.txt",
        "linux-64/.conda",  # extension only
        "linux-64/",
        "linux-64/shards/0a1b2c.msgpack.zst",
        "linux-64/shards/x-1-0.conda",  # inside our shards folder
        "org/dev/linux-64/.reindexer/state.json.zst",
        "org/dev/linux-64/.reindexer/x-1-0.conda",  # inside our state folder
    ],
)
def test_locate_returns_none_for_keys_that_are_not_packages_in_a_known_subdir(key: str) -> None:
    assert locate(key) is None


def test_a_key_with_a_leading_slash_has_an_empty_channel_segment_not_the_bucket_root() -> None:
    location = locate("/noarch/x-1-0.conda")

    assert location == PackageLocation("/", "noarch", "x-1-0.conda")
    assert channel_prefix_problem(location.channel) is not None


# --- keys whose channel part breaks the channel prefix rule ------------------------------------------


def test_bad_channel_keys_fixture_is_parsed_into_keys_whose_channel_breaks_the_rule() -> None:
    """Parsing takes the keys as they are (the event is a hint); the channel rule is the handler's to
    apply. Every key in the fixture must fail it, or the handler test built on it proves nothing."""
    event = load_event("sqs_s3_bad_channel_keys.json")

    parsed = parse_event(event)

    assert parsed.malformed == []
    assert [n.message_id for n in parsed.notices] == [r["messageId"] for r in event["Records"]]
    keys = {n.message_id: n.key for n in parsed.notices}
    assert keys["dot-dot"] == "../x/noarch/p-1-0.conda"
    assert keys["control-character"] == "a\x07b/noarch/p-1-0.conda"
    assert keys["line-break"] == "a\nINFO forged log line/noarch/p-1-0.conda"
    for message_id, key in keys.items():
        location = locate(key)
        assert location is not None, message_id
        assert (location.subdir, location.filename) == ("noarch", "p-1-0.conda")
        assert channel_prefix_problem(location.channel) is not None, message_id


def test_other_bucket_fixture_names_a_package_key_in_another_bucket() -> None:
    (notice,) = parse_event(load_event("sqs_s3_other_bucket.json")).notices

    assert notice.bucket == "someone-elses-bucket"
    assert locate(notice.key) == PackageLocation(
        "", "linux-64", "sample-linux64-0001-2.3.4-h0000011_2.tar.bz2"
    )
