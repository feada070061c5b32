"""The Lambda code asset: the bundle is complete and built for the target, and CDK hashes the right files."""

from __future__ import annotations

import json
import os
import platform
import re
import struct
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda
from aws_cdk.assertions import Template

from infra.lambda_code import PLATFORM_TAGS, BundlingError, LocalPipBundling, build_bundle, lambda_code

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SKIP_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}
HANDLER_MODULES = ("reindexer.handlers.package_events", "reindexer.handlers.full_reindex")
EM_X86_64 = 62
EM_AARCH64 = 183
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# Measured arm64 bundle: ~141 MB, of which py-rattler's one shared library is 75 MB (the record schema's
# parsers), botocore 30 MB and zstandard 21 MB. The budget keeps 40 % of Lambda's limit free.
BUNDLE_BUDGET = LAMBDA_UNZIPPED_LIMIT * 0.6

# Imports the handlers from the bundle alone and reports on it; run by path with -I -S (no site-packages, no
# PYTHONPATH, no cwd), so that only the bundle is on sys.path.
BUNDLE_CHECK = PROJECT_ROOT / "tests" / "support" / "bundle_check.py"


def local_only_names() -> tuple[set[str], set[str]]:
    """What only the local tools use: (top-level names: the reindexer_cli package and the distributions of
    pyproject's `local` extra, such as moto and tqdm; the names of reindexer_cli's modules)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["local"]
    distributions = {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower() for requirement in extra}
    modules = {path.stem for path in (PROJECT_ROOT / "cli" / "reindexer_cli").glob("*.py")} - {"__init__"}
    return {"reindexer_cli", *distributions}, modules


def local_only_files(bundle: Path) -> list[str]:
    """What of the bundle belongs to the local tools: a top-level package or dist-info of theirs, or one of
    their modules inside the reindexer package."""
    top_level, modules = local_only_names()
    found = [path for path in bundle.iterdir() if path.name.split("-")[0].split(".")[0].lower() in top_level]
    found += [path for path in (bundle / "reindexer").rglob("*.py") if path.stem in modules]
    return sorted(str(path.relative_to(bundle)) for path in found)


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+).*", line)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    assert header[4] == 2 and header[5] == 1, f"{path} is not a 64-bit little-endian ELF file"
    return int(struct.unpack_from("<H", header, 18)[0])


def this_platform() -> tuple[tuple[str, ...], str]:
    """pip's platform tag and the Python version of the interpreter running the tests."""
    architectures = {"x86_64": "x86_64", "aarch64": "arm64"}
    machine = platform.machine()
    if sys.platform != "linux" or machine not in architectures or platform.libc_ver()[0] != "glibc":
        pytest.skip("the bundle's wheels only run on glibc Linux on x86_64 or aarch64")
    return PLATFORM_TAGS[architectures[machine]], f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.slow
def test_bundle_for_this_interpreter_imports_the_handlers_without_site_packages(tmp_path: Path) -> None:
    platform_tags, python_version = this_platform()
    bundle = tmp_path / "bundle"
    build_bundle(PROJECT_ROOT, bundle, platform_tags=platform_tags, python_version=python_version)

    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "ReindexerTests",
    }
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(BUNDLE_CHECK), str(bundle)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report_line, ok = result.stdout.strip().splitlines()[-2:]
    assert ok == "ok"
    report = json.loads(report_line)
    assert Path(report["files"]["reindexer"]).is_relative_to(bundle)
    assert Path(report["files"]["zstandard"]).is_relative_to(bundle)
    outside = {name: file for name, file in report["files"].items() if not Path(file).is_relative_to(bundle)}
    assert outside == {}, "modules imported from outside the bundle"
    pins = pinned_versions()
    assert report["boto3"] == pins["boto3"]
    assert report["botocore"] == pins["botocore"]
    assert report["conditional_writes"] is True
    assert report["channel_page"] is True  # Jinja2 and the templates folder are in the bundle


@pytest.mark.slow
def test_arm64_bundle_for_python_3_13_has_aarch64_extensions_and_the_handlers(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    build_bundle(PROJECT_ROOT, bundle, platform_tags=PLATFORM_TAGS["arm64"], python_version="3.13")

    extensions = sorted((bundle / "zstandard").glob("backend_c.*.so"))
    assert [path.name for path in extensions] == ["backend_c.cpython-313-aarch64-linux-gnu.so"]
    assert elf_machine(extensions[0]) == EM_AARCH64
    for shared_object in bundle.rglob("*.so"):
        assert elf_machine(shared_object) == EM_AARCH64, shared_object
    for module in HANDLER_MODULES:
        assert (bundle / (module.replace(".", "/") + ".py")).is_file()
    # The package folder is copied whole: the channel page's template, script and style come with it.
    templates = {path.name for path in (bundle / "reindexer" / "templates").iterdir()}
    assert templates == {
        path.name for path in (PROJECT_ROOT / "lambdas" / "reindexer" / "templates").iterdir()
    }
    assert (bundle / "jinja2").is_dir() and (bundle / "markupsafe").is_dir()
    assert not list(bundle.rglob("__pycache__"))
    assert not (bundle / "bin").exists()
    assert local_only_files(bundle) == [], "the Lambda asset holds local-only code or dependencies"
    size = sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
    assert size < BUNDLE_BUDGET, f"the bundle is {size / 2**20:.0f} MiB unzipped"


def test_the_local_only_check_finds_the_local_tools_and_their_dependencies(tmp_path: Path) -> None:
    # The bundle check must be able to fail: a bundle holding the CLI package, a moved-back module or tqdm.
    top_level, modules = local_only_names()
    assert {"reindexer_cli", "moto", "tqdm"} <= top_level
    assert {"cli", "local_stack", "sqs_worker", "embedded_s3"} <= modules
    for planted in ("reindexer_cli/__init__.py", "reindexer/local_stack.py", "tqdm/__init__.py"):
        (tmp_path / planted).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / planted).write_text("")
    (tmp_path / "moto-5.1.0.dist-info").mkdir()
    (tmp_path / "reindexer" / "indexer.py").write_text("")

    assert local_only_files(tmp_path) == [
        "moto-5.1.0.dist-info",
        "reindexer/local_stack.py",
        "reindexer_cli",
        "tqdm",
    ]


def test_a_pip_failure_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "lambdas" / "reindexer").mkdir(parents=True)
    (tmp_path / "lambdas" / "reindexer" / "__init__.py").write_text("")
    (tmp_path / "requirements.txt").write_text("this is not a requirement ===\n")
    with pytest.raises(BundlingError, match=r"^pip could not install .* ERROR: .*") as raised:
        build_bundle(tmp_path, tmp_path / "out", platform_tags=PLATFORM_TAGS["arm64"], python_version="3.13")
    assert "\n" not in str(raised.value)


def test_local_bundling_leaves_it_to_docker_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    original_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pip" else original_find_spec(name, *a)
    )
    bundler = LocalPipBundling(PROJECT_ROOT, platform_tags=PLATFORM_TAGS["arm64"], python_version="3.13")
    assert bundler.try_bundle(str(tmp_path), image=aws_lambda.Runtime.PYTHON_3_13.bundling_image) is False
    assert not list(tmp_path.iterdir())


def synthesize(
    project_root: Path, architecture: aws_lambda.Architecture = aws_lambda.Architecture.ARM_64
) -> Template:
    app = cdk.App(context=SKIP_BUNDLING)
    stack = cdk.Stack(app, "Test")
    aws_lambda.Function(
        stack,
        "Handler",
        runtime=aws_lambda.Runtime.PYTHON_3_13,
        architecture=architecture,
        handler="reindexer.handlers.package_events.handler",
        code=lambda_code(project_root, runtime=aws_lambda.Runtime.PYTHON_3_13, architecture=architecture),
    )
    return Template.from_stack(stack)


def asset_key(
    project_root: Path, architecture: aws_lambda.Architecture = aws_lambda.Architecture.ARM_64
) -> str:
    (function,) = synthesize(project_root, architecture).find_resources("AWS::Lambda::Function").values()
    return str(function["Properties"]["Code"]["S3Key"])


def test_the_code_asset_works_in_a_function() -> None:
    template = synthesize(PROJECT_ROOT)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.13",
            "Architectures": ["arm64"],
            "Handler": "reindexer.handlers.package_events.handler",
        },
    )
    (function,) = template.find_resources("AWS::Lambda::Function").values()
    assert re.fullmatch(r"[0-9a-f]{64}\.zip", function["Properties"]["Code"]["S3Key"])


def test_the_asset_hash_follows_the_package_and_the_pins_only(tmp_path: Path) -> None:
    package = tmp_path / "lambdas" / "reindexer"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text('"""The package."""\n')
    (tmp_path / "requirements.txt").write_text("boto3==1.44.5\n")
    baseline = asset_key(tmp_path)
    assert asset_key(tmp_path) == baseline, "the hash must be reproducible"

    # Files outside lambdas/reindexer and requirements.txt, and bytecode inside it, do not count.
    for unrelated in (
        "README.md",
        "tests/test_x.py",
        ".venv/lib/x.py",
        "lambdas/reindexer.egg-info/PKG-INFO",
        "cli/reindexer_cli/local_stack.py",
        "devtools/demo.py",
    ):
        (tmp_path / unrelated).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / unrelated).write_text("changed\n")
    (package / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0bytecode")
    assert asset_key(tmp_path) == baseline

    assert asset_key(tmp_path, aws_lambda.Architecture.X86_64) != baseline
    (tmp_path / "requirements.txt").write_text("boto3==1.44.6\n")
    with_new_pins = asset_key(tmp_path)
    assert with_new_pins != baseline
    (package / "handlers.py").write_text("def handler(event, context): ...\n")
    assert asset_key(tmp_path) not in {baseline, with_new_pins}
