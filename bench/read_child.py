"""The read child: reads one package exactly as the indexer does, in the fresh interpreter this runs in.

It reports the verdict and the read's own cost: its CPU time, and the RSS high-water mark before the read
(interpreter and imports) and after it. argv: the channel folder, the package's key (subdir/file name; empty:
no read, the interpreter and imports alone), the largest package size in bytes. Prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from reindexer.package_fetch import read_package
from reindexer.state import IndexedPackage, RejectedFile
from reindexer.storage.local import LocalStore


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    root, key, max_size = Path(args[0]), args[1], int(args[2])
    report: dict[str, object] = {
        "verdict": "imports only",
        "reason": "",
        "read_cpu_seconds": 0.0,
        "before_mb": peak_mb(),
    }
    if key:
        subdir = key.split("/")[0]
        store = LocalStore(root)
        (stored,) = [obj for obj in store.list_folder(subdir).objects if obj.key == key]
        started = time.process_time()
        outcome = read_package(store, subdir, stored, max_size=max_size)
        report["read_cpu_seconds"] = time.process_time() - started
        if isinstance(outcome, IndexedPackage):
            report["verdict"] = "indexed"
        elif isinstance(outcome, RejectedFile):
            report["verdict"], report["reason"] = "rejected", outcome.reason
        else:
            report["verdict"] = type(outcome).__name__.lower()
            report["reason"] = getattr(outcome, "reason", "")
    report["after_mb"] = peak_mb()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
