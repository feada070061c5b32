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
