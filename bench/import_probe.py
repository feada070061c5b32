"""The import probe: how long importing one module takes, in the fresh interpreter this runs in.

argv: the module's name. Prints one JSON object: {"seconds": ...}.
"""

from __future__ import annotations

# Nothing more than this: a module loaded before the clock starts would make the import look cheaper.
import importlib
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    started = time.perf_counter()
    importlib.import_module(args[0])
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
