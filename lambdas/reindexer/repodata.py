"""repodata.json and its zstd twin: rendering from records, and reading one another tool wrote."""

from __future__ import annotations

import json
from collections.abc import Mapping

import zstandard

from .layout import CONDA_EXTENSION
from .records import Record, RecordJson

# zstd level 19 (rattler-index's choice) takes about 30 s on a 44 MB repodata.json and level 16 about 4 s;
# level 10 takes 0.4 s for a file within 20 % of their size. Small files get the strongest level.
SMALL_REPODATA = 1024 * 1024
SMALL_REPODATA_ZST_LEVEL = 19
LARGE_REPODATA_ZST_LEVEL = 10


def render_repodata(subdir: str, records: Mapping[str, RecordJson], base_url: str | None = None) -> bytes:
    """Serialise a subdir's records deterministically (sorted file names, key-sorted record texts)."""
    tar_bz2: list[str] = []
    conda: list[str] = []
    for filename in sorted(records):
        entry = f"{json.dumps(filename, ensure_ascii=False)}:{records[filename]}"
        (conda if filename.endswith(CONDA_EXTENSION) else tar_bz2).append(entry)
    info: dict[str, str] = {"subdir": subdir}
    if base_url:
        info["base_url"] = base_url
    # CEP-15: version 2 announces info.base_url; older conda rejects it, so only use it when needed.
    version = 2 if base_url else 1
    header = json.dumps(info, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    text = (
        f'{{"info":{header},"packages":{{{",".join(tar_bz2)}}},'
        f'"packages.conda":{{{",".join(conda)}}},"removed":[],"repodata_version":{version}}}'
    )
    return text.encode()


def compress_repodata(repodata: bytes) -> bytes:
    """zstd frame of exactly the repodata.json bytes, with the content size recorded for readers."""
    level = SMALL_REPODATA_ZST_LEVEL if len(repodata) <= SMALL_REPODATA else LARGE_REPODATA_ZST_LEVEL
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(repodata)


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
