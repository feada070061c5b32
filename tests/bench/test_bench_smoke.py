"""Every benchmark of bench/ end to end at a tiny size, as `python -m bench.run` (what `make bench` runs):
the index timings on SeaweedFS, the request counts on the counting moto server, the handler's import time,
the event path, the worst inputs and the fan-out full reindex against the single function. Each run must
exit 0, print its report and write its figures (into a temporary folder, not .bench/), with every
benchmarked run completed.

Only that the figures came out is checked, not the targets: timings on a tiny channel say nothing. Also
checked: bench/'s modules import one another without a cycle or another module's private names, and run
no program held in a string.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
RUN_ORDER = [
    ("reindexer", "cold"),
    ("reindexer", "no-op"),
    ("rattler-index", "cold"),
    ("rattler-index", "no-op"),
]
RUN_TIMEOUT = 300
PACKAGES = 12  # over the sample channel's four subdirs, both archive formats


def run_bench(tmp_path: Path, *options: str) -> tuple[str, Path]:
    """`python -m bench.run` with the figures written under tmp_path; its stdout and the results folder."""
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--results-dir", str(results), *options],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout, results


def figures(results: Path, name: str, stdout: str) -> dict[str, Any]:
    path = results / name
    assert f"figures written to {path}" in stdout
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def index_options(tmp_path: Path, *, sizes: list[int], count: int, import_runs: int) -> list[str]:
    return [
        "--only",
        "index",
        "--sizes",
        *map(str, sizes),
        "--repeats",
        "1",
        "--count-packages",
        str(count),
        "--import-runs",
        str(import_runs),
        "--package-cache",
        str(tmp_path / "packages"),
    ]


def assert_same_indexes(comparison: dict[str, Any], packages: int) -> None:
    assert comparison["expected"] == packages
    assert comparison["records"] == {"reindexer": packages, "rattler-index": packages}
    assert comparison["differing_count"] == 0, comparison["differing"]
    assert comparison["in_one_index_only_count"] == 0, comparison["in_one_index_only"]


def test_index_timings_on_seaweedfs(tmp_path: Path) -> None:
    stdout, results = run_bench(tmp_path, *index_options(tmp_path, sizes=[PACKAGES], count=0, import_runs=0))
    report = figures(results, "index-bench.json", stdout)
    assert report["import_time"] is None and report["request_counts"] is None
    (size,) = report["sizes"]
    assert size["packages"] == PACKAGES and size["built_now"] == PACKAGES and size["rounds"] == 1
    assert size["server"].startswith("SeaweedFS")
    assert [(run["tool"], run["phase"]) for run in size["runs"]] == RUN_ORDER
    for run in size["runs"]:
        assert run["finished"], (run["tool"], run["phase"], run["exit_code"], run["stderr_tail"])
        assert run["seconds"] > 0 and run["cpu_seconds"] > 0 and run["peak_rss_mb"] > 0
        assert len(run["rounds"]) == 1
    assert size["runs"][0]["tool_requests"], "reindexer's --json summary counts its requests"
    assert set(size["ratios"]) == {"cold_wall", "cold_cpu_per_package", "noop_wall", "peak_rss"}
    assert all(ratio is not None for ratio in size["ratios"].values())
    assert_same_indexes(size["comparison"], PACKAGES)
    assert f"=== timings on SeaweedFS ({size['server']}), {PACKAGES} packages" in stdout
    assert "=== summary: reindexer / rattler-index on SeaweedFS" in stdout
    assert "index benchmark took" in stdout


def test_index_request_counts_on_moto(tmp_path: Path) -> None:
    stdout, results = run_bench(tmp_path, *index_options(tmp_path, sizes=[], count=PACKAGES, import_runs=0))
    report = figures(results, "index-bench.json", stdout)
    assert report["sizes"] == [] and report["import_time"] is None
    counts = report["request_counts"]
    assert counts["packages"] == PACKAGES
    assert [(phase["tool"], phase["phase"]) for phase in counts["phases"]] == RUN_ORDER
    for phase in counts["phases"]:
        assert phase["finished"], (phase["tool"], phase["phase"], phase["exit_code"], phase["stderr_tail"])
        assert sum(phase["requests"].values()) > 0
    cold = counts["phases"][0]
    assert cold["requests"]["GET pkg"] == PACKAGES
    assert cold["tool_report"]["requests"]
    assert_same_indexes(counts["comparison"], PACKAGES)
    assert f"=== request counts on moto (in-process, counting by kind), {PACKAGES} packages" in stdout


def test_handler_import_time(tmp_path: Path) -> None:
    stdout, results = run_bench(tmp_path, *index_options(tmp_path, sizes=[], count=0, import_runs=2))
    report = figures(results, "index-bench.json", stdout)
    assert report["sizes"] == [] and report["request_counts"] is None
    imported = report["import_time"]
    assert imported["module"] == "reindexer.handlers.package_events"
    assert imported["runs"] == 2 and len(imported["samples"]) == 2
    assert all(sample > 0 for sample in imported["samples"])
    # No median when a fresh interpreter failed to import the handler.
    assert imported["median_seconds"] is not None, imported["checks"]
    assert "=== handler import time: `import reindexer.handlers.package_events`" in stdout


def test_events(tmp_path: Path) -> None:
    stdout, results = run_bench(
        tmp_path,
        *("--only", "events", "--event-packages", "4", "--small-packages", "2"),
        *("--synthetic-records", "12", "--versions-per-name", "3", "--rattler-after-upload", "--profile"),
    )
    report = figures(results, "events-bench.json", stdout)
    setup = report["setup"]
    assert setup["packages"] == {"channel": 4, "small": 2}
    for channel, packages in setup["packages"].items():
        index = setup[f"reindexer_index_{channel}"]
        assert index["exit_code"] == 0 and index["complete"] is True and index["indexed"] == packages
    assert setup["synthetic"]["records"] == 12 and setup["synthetic"]["names"] == 4
    assert [run["records"] for run in report["handler_runs"]] == [2, 4, 12]
    for run in report["handler_runs"]:
        assert run["exit_code"] == 0, run["stderr_tail"]
        assert run["response"] == {"batchItemFailures": []} and run["published"]
        assert run["handler_seconds"] > 0 and run["import_seconds"] > 0
        assert run["request_total"] > 0 and run["handler_counted"]
        assert run["peak_rss_mb"] > 0 and run["own_high_water_mb"] > 0
        assert "function calls" in run["profile"]
    assert [run["phase"] for run in report["rattler_runs"]] == ["cold", "no-op", "one upload"]
    for rattler in report["rattler_runs"]:
        assert rattler["finished"], (rattler["phase"], rattler["exit_code"], rattler["stderr_tail"])
        assert rattler["request_total"] > 0
    assert report["handler_ratio"] is not None
    assert "handler wall time / rattler-index no-op wall time (4 records)" in stdout
    assert "cProfile of the handler call, one upload, 12 synthetic" in stdout


def test_worst_inputs(tmp_path: Path) -> None:
    stdout, results = run_bench(tmp_path, "--only", "worst", "--worst-runs", "1")
    report = figures(results, "worst-inputs.json", stdout)
    assert report["runs"] == 1 and report["bounds"]
    rows = report["rows"]
    assert rows[0]["label"] == "interpreter + imports, no read" and rows[0]["verdict"] == "imports only"
    assert {row["verdict"] for row in rows[1:3]} == {"indexed"}, "the two normal packages"
    for row in rows:
        assert row["verdict"] == row["expected"], (row["label"], row["archive"], row["reason"])
        assert row["cpu_seconds"] > 0 and row["peak_rss_mb"] > 0 and row["runs"] == 1
    assert all(row["cpu_ratio"] is not None for row in rows[3:])
    assert "highest CPU ratio:" in stdout and "UNEXPECTED" not in stdout


def test_fanout(tmp_path: Path) -> None:
    stdout, results = run_bench(tmp_path, "--only", "fanout", "--fanout-packages", str(PACKAGES))
    report = figures(results, "fanout-bench.json", stdout)
    assert report["packages"] == PACKAGES
    single, fanout = report["runs"]
    assert (single["path"], fanout["path"]) == ("single function", "fan-out")
    for run in (single, fanout):
        assert run["exit_code"] == 0, run["stderr_tail"]
        assert run["requests"]["GET pkg"] == PACKAGES and run["cpu_seconds"] > 0
    assert fanout["report"]["status"] == "SUCCEEDED" and fanout["report"]["invoked"]["read"] >= 1
    assert report["comparison"]["records"] == {"single function": PACKAGES, "fan-out": PACKAGES}
    assert report["comparison"]["run_objects_left"] == []
    assert "=== fan-out full reindex against the single full-reindex function" in stdout


# --- bench/'s structure ------------------------------------------------------------------------------


def bench_imports() -> dict[str, set[tuple[str, str | None]]]:
    """Every bench module's imports of bench modules, anywhere in it: (module, name imported from it)."""
    modules = {path.stem for path in BENCH.glob("*.py")} - {"__init__"}
    found: dict[str, set[tuple[str, str | None]]] = {}
    for module in sorted(modules):
        edges: set[tuple[str, str | None]] = set()
        for node in ast.walk(ast.parse((BENCH / f"{module}.py").read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".") for alias in node.names]
                edges |= {(parts[1], None) for parts in names if parts[0] == "bench" and len(parts) > 1}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"bench/{module}.py: bench's modules import by absolute name"
                parts = (node.module or "").split(".")
                if parts == ["bench"]:
                    edges |= {(alias.name, None) for alias in node.names if alias.name in modules}
                elif parts[0] == "bench":
                    edges |= {(parts[1], alias.name) for alias in node.names}
        found[module] = edges
    return found


def test_bench_modules_import_without_a_cycle() -> None:
    graph = {module: {target for target, _ in edges} for module, edges in bench_imports().items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import cycle in bench/: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert graph["run"] >= {"events", "worst_inputs"}, "bench.run imports the other benchmarks directly"


def test_bench_modules_import_no_private_names() -> None:
    private = sorted(
        f"{module} imports {target}.{name}"
        for module, edges in bench_imports().items()
        for target, name in edges
        if name is not None and name.startswith("_")
    )
    assert private == []


def test_bench_runs_no_program_from_a_string() -> None:
    """Children are modules run with `python -m bench.<child>`, never source text given to `python -c`."""
    offenders = sorted(
        f"bench/{path.name}:{node.lineno}"
        for path in BENCH.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == "-c"
    )
    assert offenders == []
