"""Handler settings from environment variables: defaults, one-line validation errors, channel prefixes."""

from __future__ import annotations

import pytest

from reindexer.config import MAX_JOBS, ConfigurationError, HandlerSettings
from reindexer.indexer import DEFAULT_JOBS
from reindexer.publication import DEFAULT_REPODATA_MAX_AGE


def test_defaults_when_nothing_is_set() -> None:
    settings = HandlerSettings.from_environment({})

    assert settings == HandlerSettings(
        bucket=None,
        repodata_max_age=DEFAULT_REPODATA_MAX_AGE,
        read_jobs=DEFAULT_JOBS,
        channel_prefixes=None,
    )
    assert settings.repodata_max_age == 60
    assert settings.read_jobs == 8


def test_blank_values_count_as_unset() -> None:
    settings = HandlerSettings.from_environment(
        {"CHANNEL_BUCKET": "  ", "REPODATA_MAX_AGE": "", "READ_JOBS": " "}
    )

    assert (settings.bucket, settings.repodata_max_age, settings.read_jobs) == (None, 60, 8)


def test_values_are_read_and_trimmed() -> None:
    settings = HandlerSettings.from_environment(
        {"CHANNEL_BUCKET": " my-channel.bucket ", "REPODATA_MAX_AGE": " 0 ", "READ_JOBS": str(MAX_JOBS)}
    )

    assert settings.bucket == "my-channel.bucket"
    assert settings.repodata_max_age == 0
    assert settings.read_jobs == MAX_JOBS


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REPODATA_MAX_AGE", "five minutes"),
        ("REPODATA_MAX_AGE", "1.5"),
        ("REPODATA_MAX_AGE", "-1"),
        ("REPODATA_MAX_AGE", "31536001"),
        ("REPODATA_MAX_AGE", "300\nREAD_JOBS=8"),
        ("READ_JOBS", "eight"),
        ("READ_JOBS", "0"),
        ("READ_JOBS", "-4"),
        ("READ_JOBS", str(MAX_JOBS + 1)),
        ("READ_JOBS", "100000000000000000000"),
    ],
)
def test_bad_number_raises_one_line_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        HandlerSettings.from_environment({variable: value})

    message = str(raised.value)
    assert message.startswith(f"{variable}=")
    assert "\n" not in message


@pytest.mark.parametrize(
    "bucket",
    [
        "My-Bucket",
        "my_bucket",
        "ab",
        "-bucket",
        "bucket-",
        "s3://my-bucket",
        "my-bucket/dev",
        "a" * 64,
        "my..bucket",
    ],
)
def test_invalid_bucket_name_raises_one_line_error_naming_the_variable(bucket: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        HandlerSettings.from_environment({"CHANNEL_BUCKET": bucket})

    message = str(raised.value)
    assert message.startswith("CHANNEL_BUCKET=")
    assert "\n" not in message


@pytest.mark.parametrize("bucket", ["abc", "my-bucket", "my.bucket.example", "a" * 63, "0bucket9"])
def test_valid_bucket_names_are_accepted(bucket: str) -> None:
    assert HandlerSettings.from_environment({"CHANNEL_BUCKET": bucket}).bucket == bucket


def test_unset_channel_prefixes_manage_every_channel() -> None:
    settings = HandlerSettings.from_environment({})

    assert settings.channel_prefixes is None
    assert settings.manages("")
    assert settings.manages("org/dev")


def test_empty_channel_prefixes_mean_the_bucket_root_only() -> None:
    settings = HandlerSettings.from_environment({"CHANNEL_PREFIXES": ""})

    assert settings.channel_prefixes == frozenset({""})
    assert settings.manages("")
    assert not settings.manages("dev")


def test_channel_prefixes_are_stripped_of_spaces_and_slashes() -> None:
    settings = HandlerSettings.from_environment({"CHANNEL_PREFIXES": " dev , /org/staging/ ,prod/"})

    assert settings.channel_prefixes == frozenset({"dev", "org/staging", "prod"})
    assert settings.manages("dev")
    assert settings.manages("org/staging")
    assert settings.manages("prod")
    assert not settings.manages("")
    assert not settings.manages("org")
    assert not settings.manages("org/staging/extra")
    assert not settings.manages("de")


def test_channel_prefixes_can_include_the_bucket_root_among_others() -> None:
    settings = HandlerSettings.from_environment({"CHANNEL_PREFIXES": "/, dev"})

    assert settings.channel_prefixes == frozenset({"", "dev"})
    assert settings.manages("")
    assert settings.manages("dev")
    assert not settings.manages("staging")
