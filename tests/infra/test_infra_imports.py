"""The CDK app stays independent of the indexer: of the reindexer package it loads only reindexer.contract."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CDK_APP_FILES = sorted([*(PROJECT_ROOT / "infra").glob("*.py"), PROJECT_ROOT / "app.py"])
CDK_APP_MODULES = ("infra.channel_stack", "infra.conda_channel", "infra.lambda_code", "infra.settings")
ALLOWED = {"reindexer.contract"}


def reindexer_imports(path: Path) -> set[str]:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from reindexer import contract` names the module in the alias, not in node.module.
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in imported if name == "reindexer" or name.startswith("reindexer.")}


def test_infra_and_app_name_no_reindexer_module_but_the_contract():
    for path in CDK_APP_FILES:
        named = {name for name in reindexer_imports(path) if not name.startswith("reindexer.contract.")}
        assert named <= ALLOWED, f"{path.relative_to(PROJECT_ROOT)} imports {sorted(named - ALLOWED)}"


def test_loading_the_cdk_app_loads_no_reindexer_module_but_the_contract():
    # A fresh interpreter, so that modules other tests imported do not hide an indirect import.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.loaded_modules",
            "--import",
            "app",
            *CDK_APP_MODULES,
            "--top-level",
            "reindexer",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))

    # The package's own __init__ runs first; it holds only the version.
    assert loaded == {"reindexer", *ALLOWED}
