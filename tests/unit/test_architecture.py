"""The domain core stays free of AWS SDKs and S3 clients (only reindexer.storage.s3 uses them), and nothing
in the Lambda package reaches the local tools or their dependencies."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import reindexer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(reindexer.__file__).parent
CORE_MODULES = [
    "reindexer.layout",
    "reindexer.package_reader",
    "reindexer.records",
    "reindexer.repodata",
    "reindexer.shards",
    "reindexer.state",
    "reindexer.planner",
    "reindexer.indexer",
    "reindexer.store",
    "reindexer.channeldata",
    "reindexer.channel_page",
    "reindexer.channel_files",
]
ALLOWED_AWS_USERS = {"reindexer.storage.s3"}
AWS_SDKS = {"boto3", "botocore", "obstore"}


def module_path(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package = PACKAGE_DIR / relative / "__init__.py"
    return package if package.is_file() else PACKAGE_DIR / relative.with_suffix(".py")


def imports_of(module: str) -> set[str]:
    """Absolute names of every module imported anywhere in `module` (including inside functions)."""
    path = module_path(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            found.add(base)
            # `from . import x` / `from .storage import local` may name submodules.
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate.startswith("reindexer.") and module_path(candidate).is_file():
                    found.add(candidate)
    return found


def transitive_imports(roots: list[str]) -> tuple[set[str], set[str]]:
    """(reindexer modules reached, every import seen) following imports within the package."""
    visited: set[str] = set()
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in visited or module in ALLOWED_AWS_USERS:
            continue
        visited.add(module)
        for name in imports_of(module):
            seen.add(name)
            if name.split(".")[0] == "reindexer" and module_path(name).is_file():
                pending.append(name)
    return visited, seen


def aws_imports(names: set[str]) -> set[str]:
    return {name for name in names if name.split(".")[0] in AWS_SDKS}


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_not_import_aws_sdks_even_transitively(module):
    visited, seen = transitive_imports([module])

    assert module in visited
    assert aws_imports(seen) == set(), f"{module} reaches {sorted(aws_imports(seen))}"


def test_import_walk_follows_relative_imports():
    visited, _ = transitive_imports(["reindexer.indexer"])

    assert {"reindexer.store", "reindexer.planner", "reindexer.state", "reindexer.layout"} <= visited


def test_import_check_detects_the_s3_adapter():
    # The checker must be able to fail: the S3 adapter does import obstore and botocore.
    assert aws_imports(imports_of("reindexer.storage.s3")) >= {
        "obstore",
        "botocore.session",
        "botocore.config",
    }


def test_importing_the_indexer_and_local_store_loads_no_aws_sdk():
    # A fresh interpreter, so that modules other tests imported do not hide an indirect import.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.loaded_modules",
            "--import",
            "reindexer.indexer",
            "reindexer.storage.local",
            "--top-level",
            *sorted(AWS_SDKS),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


LOCAL_ONLY = {"reindexer_cli", "moto", "tqdm"}


def lambda_modules() -> list[str]:
    return sorted(
        "reindexer." + ".".join(path.relative_to(PACKAGE_DIR).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE_DIR.rglob("*.py")
    )


@pytest.mark.parametrize("module", lambda_modules())
def test_lambda_package_never_imports_the_local_tools(module):
    assert {name for name in imports_of(module) if name.split(".")[0] in LOCAL_ONLY} == set()


def test_local_tools_check_sees_every_module_of_the_package():
    assert {"reindexer.handlers.package_events", "reindexer.storage.s3", "reindexer.contract"} <= set(
        lambda_modules()
    )


TESTS_DIR = Path(__file__).resolve().parents[1]


def support_imports() -> dict[str, set[str]]:
    """tests.support's modules and the modules of tests/ each one imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted((TESTS_DIR / "support").glob("*.py")):
        module = f"tests.support.{path.stem}"
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        graph[module] = {name for name in names if name.split(".")[0] == "tests"}
    return graph


def test_test_support_imports_no_test_module_and_has_no_cycle():
    graph = support_imports()
    assert {"tests.support.archives", "tests.support.stores", "tests.support.checks"} <= set(graph)
    outside = {f"{module} -> {name}" for module, names in graph.items() for name in names}
    outside = {edge for edge in outside if not edge.split(" -> ")[1].startswith("tests.support")}
    assert outside == set(), "tests/support must not import test modules or conftests"
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import cycle: " + " -> ".join([*path[path.index(module) :], module])
        if module not in done:
            for target in sorted(graph.get(module, ())):
                visit(target, [*path, module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_test_runs_a_program_held_in_a_string():
    """Probes run in fresh interpreters are modules (python -m tests.support.<probe>), never `python -c`."""
    offenders = [
        f"{path.relative_to(TESTS_DIR)}:{node.lineno}"
        for path in sorted(TESTS_DIR.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        # "-c" as an element of a command list; mentions of it elsewhere (checks like this one) are fine
        if isinstance(node, ast.List | ast.Tuple)
        and any(isinstance(item, ast.Constant) and item.value == "-c" for item in node.elts)
    ]
    assert offenders == []
