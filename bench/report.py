"""What the benchmarks' reports share: a target and its outcome, the tables, the results file."""

from __future__ import annotations

import argparse
import json
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / ".bench"


@dataclass
class Check:
    """One target of a benchmark: whether it was met, and the figures that say so."""

    name: str
    passed: bool
    detail: str


def add_results_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        metavar="DIR",
        help="folder the figures are written to as JSON (default .bench)",
    )


def write_results(path: Path, figures: Any) -> None:
    """Write the figures as indented JSON and say where they went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    print(f"\nfigures written to {shown}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: Container[int]) -> None:
    """A blank line, then the table: the columns whose index is in `left` aligned left, the rest right."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * width for width in widths)

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print()
    print(render(headers))
    print(line)
    for row in rows:
        print(render(row))
    print(line)


def print_checks(checks: Sequence[Check]) -> None:
    print("targets:")
    for check in checks:
        print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}  ({check.detail})")


def tail(text: str, lines: int = 5) -> str:
    """The last lines of a child's output (its stderr, say), for a report."""
    return "\n".join(text.strip().splitlines()[-lines:])
