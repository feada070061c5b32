"""repodata.json and its zstd twin: rendering from records, and reading one another tool wrote."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import zstandard

from .contract import CONDA_SUFFIX
from .records import Record, RecordJson, decode_record

# zstd levels, measured on conda's real test repodata and on conda-forge-shaped files of 5 KB to 50 MB (CPU of
# one dev machine). Levels 16-19 parse optimally, which wins ~12 % on a 1 MB repodata.json (its random hex
# digests fool greedier parsers); level 16 keeps all but 0-2 % of level 19's size in 35-55 % of its CPU from
# 30 KB up (1 MB: 0.24 s, not 0.69 s), and below 16 the win is lost at once (levels 12 to 1: +6-29 %). Large
# files give up that win: level 1 (7-byte minimum match, so no short matches inside digests) comes out within
# -7 % to +3 % of level 10's size in a twentieth of its CPU (50 MB: 0.15 s, not 2.9 s); levels 3-10 are
# larger or slower.
SMALL_REPODATA = 1024 * 1024
SMALL_REPODATA_ZST_LEVEL = 16
LARGE_REPODATA_ZST_LEVEL = 1


def render_repodata(
    subdir: str,
    records: Mapping[str, RecordJson],
    base_url: str | None = None,
    removed: Sequence[str] = (),
) -> bytes:
    """Serialise a subdir's records deterministically (sorted file names, key-sorted record texts);
    `removed` lists the files patch instructions took out."""
    tar_bz2: list[str] = []
    conda: list[str] = []
    for filename in sorted(records):
        entry = f"{json.dumps(filename, ensure_ascii=False)}:{records[filename]}"
        (conda if filename.endswith(CONDA_SUFFIX) else tar_bz2).append(entry)
    info: dict[str, str] = {"subdir": subdir}
    if base_url:
        info["base_url"] = base_url
    # CEP-15: version 2 announces info.base_url; older conda rejects it, so only use it when needed.
    version = 2 if base_url else 1
    header = json.dumps(info, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    removed_list = json.dumps(sorted(removed), ensure_ascii=False, separators=(",", ":"))
    text = (
        f'{{"info":{header},"packages":{{{",".join(tar_bz2)}}},'
        f'"packages.conda":{{{",".join(conda)}}},"removed":{removed_list},"repodata_version":{version}}}'
    )
    return text.encode()


RUN_EXPORTS_VERSION = 1
_RUN_EXPORTS_FIELD = '"run_exports":'


def render_run_exports(subdir: str, records: Mapping[str, RecordJson]) -> bytes:
    """run_exports.json (the accepted CEP "Serving run_exports metadata in conda channels", as conda-index
    writes it): every package's run_exports as its archive declares them, `{}` when it declares none. Never
    patched: give it the records as read. Only records that hold run_exports are parsed."""
    sections: dict[str, dict[str, Any]] = {"packages": {}, "packages.conda": {}}
    for filename in sorted(records):
        text = records[filename]
        exports = decode_record(text).get("run_exports", {}) if _RUN_EXPORTS_FIELD in text else {}
        section = "packages.conda" if filename.endswith(CONDA_SUFFIX) else "packages"
        sections[section][filename] = {"run_exports": exports}
    document = {"info": {"subdir": subdir, "version": RUN_EXPORTS_VERSION}, **sections}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


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
