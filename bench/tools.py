"""The command lines of the benchmarked tools: reindexer's CLI and rattler-index (py-rattler's index_s3)."""

from __future__ import annotations

import sys
from pathlib import Path

from bench import rattler_index_child
from bench.children import ChildRun, module_command


def reindexer_command() -> list[str]:
    """The installed `reindexer` program beside this Python, else its module."""
    script = Path(sys.executable).parent / "reindexer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reindexer_cli.cli"]


def rattler_index_command(endpoint_url: str, channel_url: str, *credentials: str) -> list[str]:
    """rattler-index on `channel_url` (s3://bucket/prefix) in a fresh interpreter; `credentials`: an access
    key and a secret key, or none for moto's `testing` keys."""
    return module_command(rattler_index_child.__name__, endpoint_url, channel_url, *credentials)


def rattler_index_finished(child: ChildRun) -> bool:
    """Whether rattler-index finished its work, even if py-rattler then crashed at interpreter exit."""
    return child.exit_code == 0 or rattler_index_child.DONE_MARKER in child.stdout
