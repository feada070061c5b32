"""The indexer's own memory between runs: it must survive a round trip and refuse what it cannot read."""

from __future__ import annotations

import json
import random

import pytest
import zstandard

from reindexer.reports import MAX_REASON_LENGTH
from reindexer.state import STATE_FORMAT, IndexedPackage, RejectedFile, SubdirState

B_RECORD = '{"build":"h0_0","name":"b","summary":"Ünï\\ttab","version":"1.0"}'
A_RECORD = '{"depends":["b >=1"],"name":"a"}'


def sample_state() -> SubdirState:
    return SubdirState(
        packages={
            "b-1.0-h0_0.conda": IndexedPackage("etag-b", 20, B_RECORD),
            "a-1.0-h0_0.tar.bz2": IndexedPackage("etag-a", 10, A_RECORD),
        },
        rejected={"bad-1.0-h0_0.conda": RejectedFile("etag-bad", 3, "not a valid .conda (zip) archive")},
        outputs={"repodata.json": "e1", "repodata.json.zst": "e2", "repodata_shards.msgpack.zst": "e3"},
        shards={"a": "00" * 32, "b": "11" * 32},
        settings='{"format": 1}',
    )


def encode(document: object) -> bytes:
    return zstandard.ZstdCompressor().compress(json.dumps(document).encode())


def with_package_line(line: str) -> bytes:
    header = {"format": STATE_FORMAT, "settings": "", "outputs": {}, "shards": {}, "rejected": {}}
    return zstandard.ZstdCompressor().compress(f"{json.dumps(header)}\n{line}".encode())


def test_state_round_trips_through_bytes():
    state = sample_state()

    assert SubdirState.from_bytes(state.to_bytes()) == state


def test_empty_state_round_trips_through_bytes():
    assert SubdirState.from_bytes(SubdirState().to_bytes()) == SubdirState()


def test_state_bytes_are_deterministic_whatever_the_insertion_order():
    state = sample_state()
    reordered = SubdirState(
        packages=dict(reversed(list(state.packages.items()))),
        rejected=state.rejected,
        outputs=state.outputs,
        shards=state.shards,
        settings=state.settings,
    )

    assert reordered.to_bytes() == state.to_bytes()


def test_state_records_are_the_package_records():
    assert sample_state().records() == {"b-1.0-h0_0.conda": B_RECORD, "a-1.0-h0_0.tar.bz2": A_RECORD}


def test_state_refuses_to_store_a_file_name_it_could_not_read_back():
    state = SubdirState(packages={"a\tb-1.0-h0_0.conda": IndexedPackage("e", 1, A_RECORD)})

    with pytest.raises(ValueError, match="tab or newline"):
        state.to_bytes()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        sample_state().to_bytes()[:-8],  # torn write
        random.Random(1).randbytes(256),
        zstandard.ZstdCompressor().compress(b"not json"),
        zstandard.ZstdCompressor().compress(b"\xff\xfe\xfd"),
        encode([1, 2, 3]),
        encode("a string"),
        encode({"format": STATE_FORMAT}),  # keys missing
        with_package_line("a-1-0.conda"),  # not four tab-separated fields
        with_package_line("a-1-0.conda\tetag\tten\t{}"),  # size is not a number
    ],
)
def test_from_bytes_raises_value_error_on_garbage(data):
    with pytest.raises(ValueError):
        SubdirState.from_bytes(data)


@pytest.mark.parametrize("version", [None, 0, STATE_FORMAT + 1, "1"])
def test_from_bytes_raises_value_error_on_another_format(version):
    header, *packages = (
        zstandard.ZstdDecompressor().decompress(sample_state().to_bytes()).decode().split("\n")
    )
    document = json.loads(header)
    document["format"] = version
    data = "\n".join([json.dumps(document), *packages]).encode()

    with pytest.raises(ValueError, match="format"):
        SubdirState.from_bytes(zstandard.ZstdCompressor().compress(data))


def test_long_rejection_reasons_of_older_states_are_cut_to_one_short_line_on_load():
    state = SubdirState(rejected={"a-1-0.conda": RejectedFile("e", 1, "x" * 100_000 + "\nsecond line")})

    loaded = SubdirState.from_bytes(state.to_bytes())

    reason = loaded.rejected["a-1-0.conda"].reason
    assert len(reason) == MAX_REASON_LENGTH and "\n" not in reason


# --- about.json's fields: an optional fifth column ----------------------------------------------------------

ABOUT = '{"home":"https://b.example","summary":"Ünï \\\\t <b>"}'


def about_state() -> SubdirState:
    state = sample_state()
    state.packages["b-1.0-h0_0.conda"] = IndexedPackage("etag-b", 20, B_RECORD, ABOUT)
    return state


def package_lines(data: bytes) -> list[str]:
    return zstandard.ZstdDecompressor().decompress(data).decode().split("\n")[1:]


def test_state_with_about_round_trips_through_bytes():
    state = about_state()

    loaded = SubdirState.from_bytes(state.to_bytes())

    assert loaded == state
    assert loaded.packages["b-1.0-h0_0.conda"].about == ABOUT
    assert loaded.packages["a-1.0-h0_0.tar.bz2"].about == ""


def test_about_is_a_fifth_column_only_where_a_package_has_one():
    lines = package_lines(about_state().to_bytes())

    assert [line.count("\t") for line in lines] == [3, 4]  # a (no about), then b
    assert lines[1].split("\t")[4] == ABOUT


def test_a_state_of_the_previous_format_with_four_columns_still_reads():
    # What an indexer before about.json wrote: format 2, four columns. Its packages have no about until read.
    header = {"format": 2, "settings": "", "outputs": {}, "shards": {}, "rejected": {}}
    line = f"a-1.0-h0_0.tar.bz2\tetag-a\t10\t{A_RECORD}"
    data = zstandard.ZstdCompressor().compress(f"{json.dumps(header)}\n{line}".encode())

    loaded = SubdirState.from_bytes(data)

    assert loaded.packages == {"a-1.0-h0_0.tar.bz2": IndexedPackage("etag-a", 10, A_RECORD)}


def test_states_are_written_in_the_format_an_older_indexer_refuses_rather_than_misreads():
    # Format 2 readers split lines in four: `record<TAB>about` would have become a broken record.
    header = json.loads(
        zstandard.ZstdDecompressor().decompress(about_state().to_bytes()).decode().split("\n")[0]
    )

    assert header["format"] == STATE_FORMAT == 3


def test_state_refuses_to_store_about_text_it_could_not_read_back():
    state = SubdirState(packages={"a-1.0-h0_0.conda": IndexedPackage("e", 1, A_RECORD, '{"a":"\t"}')})

    with pytest.raises(ValueError, match="tab or newline"):
        state.to_bytes()
