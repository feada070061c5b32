"""Change planning: which files a run reads, keeps, drops and refuses, judged from a listing and the state."""

from __future__ import annotations

import pytest

from reindexer.contract import PUBLISHED_FILES
from reindexer.layout import FOREIGN_INDEX_FILES
from reindexer.planner import adopt_repodata, listing_rejection, plan_subdir
from reindexer.records import decode_record, encode_record, sort_record
from reindexer.state import IndexedPackage, RejectedFile, SubdirState
from reindexer.store import StoredObject

A = "a-1.0-h0_0.conda"
B = "b-1.0-h0_0.tar.bz2"
C = "c-1.0-h0_0.conda"
MD5 = "0123456789abcdef0123456789abcdef"
SUBDIR = "linux-64"


def obj(name: str, etag: str = "e1", size: int = 100, subdir: str = "linux-64") -> StoredObject:
    return StoredObject(f"chan/{subdir}/{name}", etag, size)


def known(etag: str = "e1", size: int = 100, name: str = "a") -> IndexedPackage:
    return IndexedPackage(
        etag, size, encode_record({"name": name, "md5": MD5, "sha256": "f" * 64, "size": size})
    )


def test_new_package_is_read_and_counted_as_added():
    plan = plan_subdir([obj(A)], SubdirState())

    assert [o.name for o in plan.read] == [A]
    assert plan.added == [A]
    assert plan.replaced == set()
    assert plan.keep == {}


def test_unchanged_package_is_kept_without_reading():
    previous = SubdirState(packages={A: known()})

    plan = plan_subdir([obj(A)], previous)

    assert plan.read == []
    assert plan.keep == {A: previous.packages[A]}
    assert plan.removed == []


@pytest.mark.parametrize(("etag", "size"), [("e2", 100), ("e1", 101)])
def test_same_name_reupload_is_read_again_as_a_replacement(etag, size):
    previous = SubdirState(packages={A: known()})

    plan = plan_subdir([obj(A, etag, size)], previous)

    assert [o.name for o in plan.read] == [A]
    assert plan.replaced == {A}
    assert plan.added == []
    assert plan.keep == {}


def test_package_missing_from_the_listing_is_removed():
    previous = SubdirState(packages={A: known(), B: known(name="b")})

    plan = plan_subdir([obj(A)], previous)

    assert plan.removed == [B]
    assert list(plan.keep) == [A]


def test_mixed_listing_plans_new_changed_unchanged_and_removed():
    previous = SubdirState(packages={A: known(), B: known(name="b"), "d-1-0.conda": known(name="d")})

    plan = plan_subdir([obj(C), obj(B, "e2"), obj(A)], previous)

    assert [o.name for o in plan.read] == [B, C]  # sorted
    assert plan.added == [C]
    assert plan.replaced == {B}
    assert list(plan.keep) == [A]
    assert plan.removed == ["d-1-0.conda"]


def test_known_rejected_file_with_the_same_etag_is_not_read_again():
    refused = RejectedFile("e1", 100, "not a valid .conda (zip) archive")
    previous = SubdirState(rejected={A: refused})

    plan = plan_subdir([obj(A)], previous)

    assert plan.read == []
    assert plan.rejected == {A: refused}


def test_rejected_file_uploaded_again_is_read_again():
    previous = SubdirState(rejected={A: RejectedFile("e1", 100, "bad")})

    plan = plan_subdir([obj(A, "e2")], previous)

    assert [o.name for o in plan.read] == [A]
    assert plan.rejected == {}
    assert plan.added == [A]


def test_rejected_file_that_was_deleted_is_forgotten():
    previous = SubdirState(rejected={A: RejectedFile("e1", 100, "bad")})

    plan = plan_subdir([], previous)

    assert plan.rejected == {}
    assert plan.removed == []


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("README.md", "not a conda package"),
        ("pkg-1.0-h0_0.zip", "not a conda package"),
        ("pkg-1.0.conda", "file name is not <name>-<version>-<build>"),
        ("pkg.tar.bz2", "file name is not <name>-<version>-<build>"),
    ],
)
def test_non_packages_are_rejected_from_the_listing_without_reading(filename, reason):
    assert reason in (listing_rejection(filename) or "")

    plan = plan_subdir([obj(filename)], SubdirState())

    assert plan.read == []
    assert reason in plan.rejected[filename].reason
    assert (plan.rejected[filename].etag, plan.rejected[filename].size) == ("e1", 100)


def test_listing_rejection_accepts_valid_package_names():
    assert listing_rejection(A) is None
    assert listing_rejection(B) is None


@pytest.mark.parametrize("filename", sorted({*PUBLISHED_FILES, *FOREIGN_INDEX_FILES}))
def test_our_outputs_and_foreign_index_files_are_ignored(filename):
    plan = plan_subdir([obj(filename), obj(A)], SubdirState())

    assert [o.name for o in plan.read] == [A]
    assert plan.rejected == {}


def test_force_reads_every_package_again():
    previous = SubdirState(
        packages={A: known(), B: known(name="b")},
        rejected={C: RejectedFile("e1", 100, "bad")},
    )

    plan = plan_subdir([obj(A), obj(B), obj(C)], previous, force=True)

    assert [o.name for o in plan.read] == [A, B, C]
    assert plan.keep == {}
    assert plan.replaced == {A, B}
    assert plan.added == [C]


# --- adopting another indexer's repodata.json ---------------------------------------------------------


def adoptable(size: int = 100, md5: str = MD5, **fields: object) -> dict[str, object]:
    return {
        "name": "a",
        "version": "1.0",
        "build": "h0_0",
        "md5": md5,
        "sha256": "f" * 64,
        "size": size,
        **fields,
    }


def test_adopt_repodata_takes_records_whose_md5_is_the_plain_etag():
    record = adoptable()

    state = adopt_repodata({A: record}, [obj(A, MD5, 100)], SUBDIR)

    expected = {**record, "subdir": SUBDIR, "build_number": 0, "depends": []}
    assert state.packages == {A: IndexedPackage(MD5, 100, encode_record(sort_record(expected)))}
    assert state.outputs == {}


def test_adopted_records_are_cleaned_like_new_ones():
    record = adoptable(fn="elsewhere.conda", url="https://evil.example/a.conda", custom={"x": 1})

    state = adopt_repodata({A: record}, [obj(A, MD5, 100)], SUBDIR)

    adopted = decode_record(state.packages[A].record)
    assert not {"fn", "url", "custom"} & adopted.keys()


@pytest.mark.parametrize(
    "fields", [{"noarch": "x"}, {"version": "2.0"}, {"depends": ["numpy 1!!2"]}, {"timestamp": float("nan")}]
)
def test_adopt_repodata_reads_again_records_todays_rules_refuse(fields):
    assert adopt_repodata({A: adoptable(**fields)}, [obj(A, MD5, 100)], SUBDIR).packages == {}


def test_adopt_repodata_skips_records_with_another_md5():
    state = adopt_repodata({A: adoptable(md5="f" * 32)}, [obj(A, MD5, 100)], SUBDIR)

    assert state.packages == {}


def test_adopt_repodata_skips_records_with_another_size():
    state = adopt_repodata({A: adoptable(size=99)}, [obj(A, MD5, 100)], SUBDIR)

    assert state.packages == {}


@pytest.mark.parametrize("etag", [f"{MD5}-2", "abc-2", MD5.upper(), f'"{MD5}"', "1a2b-64f0-1f"])
def test_adopt_repodata_never_trusts_etags_that_are_not_plain_md5(etag):
    state = adopt_repodata({A: adoptable(md5=etag)}, [obj(A, etag, 100)], SUBDIR)

    assert state.packages == {}


@pytest.mark.parametrize("missing", ["name", "sha256"])
def test_adopt_repodata_skips_records_clients_could_not_use(missing):
    record = adoptable()
    del record[missing]

    assert adopt_repodata({A: record}, [obj(A, MD5, 100)], SUBDIR).packages == {}


def test_adopt_repodata_ignores_records_of_files_no_longer_listed_and_files_without_records():
    state = adopt_repodata({A: adoptable()}, [obj(B, MD5, 100)], SUBDIR)

    assert state.packages == {}


def test_adopted_packages_are_kept_by_the_next_plan():
    record = adoptable()
    listing = [obj(A, MD5, 100), obj(B, "e9", 5)]

    plan = plan_subdir(listing, adopt_repodata({A: record, B: adoptable()}, listing, SUBDIR))

    assert list(plan.keep) == [A]
    assert [o.name for o in plan.read] == [B]
