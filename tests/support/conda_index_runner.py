"""conda-index (the PyPI package conda-index, its Python API) on a local channel folder, in a fresh
interpreter: repodata.json, run_exports.json in every subdir and channeldata.json, written into the folder.
Prints as JSON the conda modules it loaded and where from, so the caller can check that only the shim's were.

conda-index imports conda, which is not on PyPI; run this with tests/support/conda_shim on PYTHONPATH (and
only there): python -m tests.support.conda_index_runner CHANNEL_FOLDER, from the project root."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def run_conda_index(channel: Path) -> None:
    from conda_index.index import ChannelIndex

    index = ChannelIndex(
        channel,
        channel.name,
        threads=1,  # no process pool: conda-index runs its DummyExecutor in this process
        write_bz2=False,
        write_zst=False,
        write_run_exports=True,
        compact_json=True,
        write_monolithic=True,
        write_shards=False,
        write_current_repodata=False,  # its current_repodata module needs conda's solver
    )
    index.index(patch_generator=None)
    index.update_channeldata(rss=False)


def conda_modules() -> dict[str, str | None]:
    """Every loaded module of the `conda` package, with the file it came from."""
    return {
        name: getattr(module, "__file__", None)
        for name, module in sorted(sys.modules.items())
        if name == "conda" or name.startswith("conda.")
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.conda_index_runner", description=__doc__)
    parser.add_argument("channel", type=Path, help="the channel folder (its subdirs hold the packages)")
    arguments = parser.parse_args(argv)
    run_conda_index(arguments.channel)
    print(json.dumps({"conda_modules": conda_modules()}))


if __name__ == "__main__":
    main()
