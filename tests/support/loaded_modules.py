"""Which modules an import loads: imports each --import MODULE in this fresh interpreter, then prints as JSON
the sorted loaded modules whose top-level name is a --top-level NAME.
Run from the project root: python -m tests.support.loaded_modules --import MODULE... --top-level NAME..."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterable, Sequence


def loaded_modules(top_level: Iterable[str]) -> list[str]:
    """The sorted names of the modules loaded so far whose top-level name is in `top_level`."""
    wanted = set(top_level)
    return sorted(name for name in list(sys.modules) if name.split(".")[0] in wanted)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.loaded_modules", description=__doc__)
    parser.add_argument("--import", dest="imports", nargs="+", required=True, metavar="MODULE")
    parser.add_argument("--top-level", nargs="+", required=True, metavar="NAME")
    arguments = parser.parse_args(argv)
    for module in arguments.imports:
        importlib.import_module(module)
    print(json.dumps(loaded_modules(arguments.top_level)))


if __name__ == "__main__":
    main()
