"""repodata.json and its zstd twin: rendering from records, and reading one another tool wrote."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import zstandard

from .layout import CONDA_EXTENSION
from .records import Record

# Level 16 is conda-index's choice: close to level 19's size at a fraction of the time on large subdirs.
REPODATA_ZST_LEVEL = 16


def render_repodata(subdir: str, records: Mapping[str, Record], base_url: str | None = None) -> bytes:
    """Serialise a subdir's records deterministically (sorted file names, sorted record keys)."""
    tar_bz2: dict[str, Record] = {}
    conda: dict[str, Record] = {}
    for filename in sorted(records):
        (conda if filename.endswith(CONDA_EXTENSION) else tar_bz2)[filename] = records[filename]
    info: dict[str, Any] = {"subdir": subdir}
    if base_url:
        info["base_url"] = base_url
    document: dict[str, Any] = {
        "info": info,
        "packages": tar_bz2,
        "packages.conda": conda,
        "removed": [],
        # CEP-15: version 2 announces info.base_url; older conda rejects it, so only use it when needed.
        "repodata_version": 2 if base_url else 1,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def compress_repodata(repodata: bytes) -> bytes:
    """zstd frame of exactly the repodata.json bytes, with the content size recorded for readers."""
    return zstandard.ZstdCompressor(level=REPODATA_ZST_LEVEL, write_content_size=True).compress(repodata)


def parse_repodata(raw: bytes) -> dict[str, Record]:
    """Records of an existing repodata.json by file name; entries that are not objects are dropped."""
    document = json.loads(raw)
    records: dict[str, Record] = {}
    if not isinstance(document, dict):
        return records
    for section in ("packages", "packages.conda"):
        entries = document.get(section)
        if isinstance(entries, dict):
            records.update({name: record for name, record in entries.items() if isinstance(record, dict)})
    return records
