"""Handler settings from environment variables: defaults, one-line validation errors, channel prefixes."""

from __future__ import annotations

import pytest

from reindexer import contract
from reindexer.config import ConfigurationError, HandlerSettings
from reindexer.options import DEFAULT_REPODATA_MAX_AGE

BUCKET = {contract.BUCKET_VARIABLE: "my-bucket"}


def settings_of(**variables: str) -> HandlerSettings:
    return HandlerSettings.from_environment({**BUCKET, **variables})


def configuration_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as raised:
        HandlerSettings.from_environment(environ)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_defaults_when_only_the_bucket_is_set() -> None:
    settings = HandlerSettings.from_environment(BUCKET)

    assert settings == HandlerSettings(
        bucket="my-bucket",
        repodata_max_age=DEFAULT_REPODATA_MAX_AGE,
        read_jobs=contract.DEFAULT_READ_JOBS,
        channel_prefixes=None,
        max_package_mb=contract.DEFAULT_MAX_PACKAGE_MB,
        private=False,
    )
    assert settings.repodata_max_age == 60
    assert settings.read_jobs == 8
    assert settings.max_package_bytes == contract.DEFAULT_MAX_PACKAGE_MB * 1024 * 1024


@pytest.mark.parametrize("environ", [{}, {"CHANNEL_BUCKET": ""}, {"CHANNEL_BUCKET": "   "}])
def test_missing_bucket_is_a_one_line_error_naming_the_variable(environ: dict[str, str]) -> None:
    message = configuration_error(environ)

    assert message.startswith("CHANNEL_BUCKET is not set")


def test_blank_values_count_as_unset() -> None:
    settings = settings_of(REPODATA_MAX_AGE="", READ_JOBS=" ", MAX_PACKAGE_MB="", CHANNEL_ACCESS="  ")

    assert (settings.repodata_max_age, settings.read_jobs) == (60, 8)
    assert settings.max_package_mb == contract.DEFAULT_MAX_PACKAGE_MB
    assert settings.private is False


def test_values_are_read_and_trimmed() -> None:
    settings = HandlerSettings.from_environment(
        {
            "CHANNEL_BUCKET": " my-channel.bucket ",
            "REPODATA_MAX_AGE": " 0 ",
            "READ_JOBS": str(contract.MAX_READ_JOBS),
            "MAX_PACKAGE_MB": f" {contract.MAX_PACKAGE_MB_LIMIT} ",
            "CHANNEL_ACCESS": " private ",
        }
    )

    assert settings.bucket == "my-channel.bucket"
    assert settings.repodata_max_age == 0
    assert settings.read_jobs == contract.MAX_READ_JOBS
    assert settings.max_package_mb == contract.MAX_PACKAGE_MB_LIMIT
    assert settings.max_package_bytes == contract.MAX_PACKAGE_MB_LIMIT * 1024 * 1024
    assert settings.private is True


def test_the_variable_names_are_the_contracts() -> None:
    """The stack sets these names (from reindexer.contract); a renamed literal here would go unread."""
    settings = HandlerSettings.from_environment(
        {
            contract.BUCKET_VARIABLE: "my-bucket",
            contract.MAX_AGE_VARIABLE: "7",
            contract.JOBS_VARIABLE: "3",
            contract.PREFIXES_VARIABLE: "dev",
            contract.MAX_PACKAGE_VARIABLE: "5",
            contract.ACCESS_VARIABLE: "private",
        }
    )

    assert settings == HandlerSettings("my-bucket", 7, 3, frozenset({"dev"}), 5, True)


@pytest.mark.parametrize("access", contract.ACCESS_MODES)
def test_every_access_mode_is_accepted(access: str) -> None:
    assert settings_of(CHANNEL_ACCESS=access).private is (access == "private")


@pytest.mark.parametrize("access", ["Private", "secret", "none", "private,public", "private\npublic"])
def test_unknown_access_mode_is_a_one_line_error_naming_the_variable(access: str) -> None:
    message = configuration_error({**BUCKET, "CHANNEL_ACCESS": access})

    assert message.startswith("CHANNEL_ACCESS=")
    assert "private, public" in message


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
        ("READ_JOBS", str(contract.MAX_READ_JOBS + 1)),
        ("READ_JOBS", "100000000000000000000"),
        ("MAX_PACKAGE_MB", "0"),
        ("MAX_PACKAGE_MB", "-1"),
        ("MAX_PACKAGE_MB", "1.5"),
        ("MAX_PACKAGE_MB", "1GB"),
        ("MAX_PACKAGE_MB", str(contract.MAX_PACKAGE_MB_LIMIT + 1)),
    ],
)
def test_bad_number_raises_one_line_error_naming_the_variable(variable: str, value: str) -> None:
    message = configuration_error({**BUCKET, variable: value})

    assert message.startswith(f"{variable}=")


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
    message = configuration_error({"CHANNEL_BUCKET": bucket})

    assert message.startswith("CHANNEL_BUCKET=")


@pytest.mark.parametrize("bucket", ["abc", "my-bucket", "my.bucket.example", "a" * 63, "0bucket9"])
def test_valid_bucket_names_are_accepted(bucket: str) -> None:
    assert HandlerSettings.from_environment({"CHANNEL_BUCKET": bucket}).bucket == bucket


# --- channel prefixes --------------------------------------------------------------------------------


def test_unset_channel_prefixes_manage_every_valid_channel() -> None:
    settings = HandlerSettings.from_environment(BUCKET)

    assert settings.channel_prefixes is None
    assert settings.manages("")
    assert settings.manages("org/dev")
    assert settings.manages("team_a/v1.0")


@pytest.mark.parametrize(
    "channel",
    [
        "../x",
        "a/../b",
        "a//b",
        "/",
        "dev/",
        ".reindexer",
        "org/.hidden",
        "team a",
        "a\nb",
        "a\x00b",
        "x" * 257,
    ],
)
def test_a_channel_breaking_the_prefix_rule_is_never_managed(channel: str) -> None:
    assert contract.channel_prefix_problem(channel) is not None
    assert not HandlerSettings.from_environment(BUCKET).manages(channel)
    assert not settings_of(CHANNEL_PREFIXES="dev,org/dev").manages(channel)


def test_empty_channel_prefixes_mean_the_bucket_root_only() -> None:
    settings = settings_of(CHANNEL_PREFIXES="")

    assert settings.channel_prefixes == frozenset({""})
    assert settings.manages("")
    assert not settings.manages("dev")


def test_channel_prefixes_are_stripped_of_spaces_and_slashes() -> None:
    settings = settings_of(CHANNEL_PREFIXES=" dev , /org/staging/ ,prod/")

    assert settings.channel_prefixes == frozenset({"dev", "org/staging", "prod"})
    assert settings.manages("dev")
    assert settings.manages("org/staging")
    assert settings.manages("prod")
    assert not settings.manages("")
    assert not settings.manages("org")
    assert not settings.manages("org/staging/extra")
    assert not settings.manages("de")


def test_channel_prefixes_can_include_the_bucket_root_among_others() -> None:
    settings = settings_of(CHANNEL_PREFIXES="/, dev")

    assert settings.channel_prefixes == frozenset({"", "dev"})
    assert settings.manages("")
    assert settings.manages("dev")
    assert not settings.manages("staging")


@pytest.mark.parametrize(
    ("prefixes", "entry", "reason"),
    [
        ("dev,org//dev", "'org//dev'", "empty segment"),
        ("../x", "'../x'", "starting with '.'"),
        ("dev,.reindexer", "'.reindexer'", "starting with '.'"),
        ("team a", "'team a'", "may only hold"),
        ("dev,a\x00b", "'a\\x00b'", "may only hold"),
        ("x" * 300, "'xxx", "longer than"),
    ],
)
def test_a_bad_channel_prefix_is_a_one_line_error_naming_the_entry_and_the_reason(
    prefixes: str, entry: str, reason: str
) -> None:
    message = configuration_error({**BUCKET, "CHANNEL_PREFIXES": prefixes})

    assert message.startswith(f"CHANNEL_PREFIXES entry {entry}")
    assert reason in message
