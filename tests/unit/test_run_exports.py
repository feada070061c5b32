"""run_exports.json per subdir, as the accepted CEP "Serving run_exports metadata in conda channels" and
conda-index (build_run_exports_data, RUN_EXPORTS_VERSION 1) write it: every package present, `{}` when it
declares none, never patched; written by every publication, the event path included."""

from __future__ import annotations

import json

from reindexer.contract import PATCH_INSTRUCTIONS, RUN_EXPORTS_JSON, join_key
from reindexer.indexer import index_channel
from reindexer.options import IndexOptions
from reindexer.repodata import render_run_exports
from reindexer.storage.memory import MemoryStore
from reindexer.updater import update_subdir
from tests.support.archives import index_json, package_bytes

LIB, APP = "libfoo-1.0-h0_0.conda", "app-2.0-h0_0.tar.bz2"
EXPORTS = {"weak": ["libfoo >=1.0,<2.0a0"], "strong_constrains": ["libfoo-meta >=1"]}


def test_the_document_has_every_package_with_its_run_exports_or_an_empty_object():
    records = {
        LIB: json.dumps({"name": "libfoo", "run_exports": EXPORTS}, sort_keys=True, separators=(",", ":")),
        APP: json.dumps({"name": "app"}, sort_keys=True, separators=(",", ":")),
    }

    document = json.loads(render_run_exports("linux-64", records))

    assert document == {
        "info": {"subdir": "linux-64", "version": 1},
        "packages": {APP: {"run_exports": {}}},
        "packages.conda": {LIB: {"run_exports": EXPORTS}},
    }


def test_every_publication_writes_it_and_patches_never_reach_it():
    store = MemoryStore()
    lib = package_bytes(
        LIB, index_json("libfoo", "1.0"), {"info/run_exports.json": json.dumps(EXPORTS).encode()}
    )
    store.write(join_key("ch", "linux-64", LIB), lib, content_type="application/octet-stream")
    index_channel(store, "ch", IndexOptions())
    store.write(
        join_key("ch", "linux-64", PATCH_INSTRUCTIONS),
        json.dumps({"remove": [LIB]}).encode(),
        content_type="application/json",
    )

    report = update_subdir(store, "ch", "linux-64", [PATCH_INSTRUCTIONS], IndexOptions())

    assert report.written
    data = store.read(join_key("ch", "linux-64", RUN_EXPORTS_JSON))[0]
    assert json.loads(data)["packages.conda"] == {LIB: {"run_exports": EXPORTS}}, "yanked, still described"
