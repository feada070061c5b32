"""The Lambda code asset: the reindexer package plus its pinned requirements, built by a local pip.

Docker bundling (the Lambda Python build image) is only the fallback for a CDK app whose Python has no pip.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda

PACKAGE = "reindexer"
REQUIREMENTS = "requirements.txt"
# pip's platform tags for each Lambda architecture (Architecture.name): manylinux2014 (glibc 2.17) and
# manylinux_2_28, which py-rattler's arm64 wheels need; the python3.13 runtime (Amazon Linux 2023) has 2.34.
PLATFORM_TAGS = {
    "arm64": ("manylinux2014_aarch64", "manylinux_2_24_aarch64", "manylinux_2_28_aarch64"),
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64"),
}

# The asset's source is the project root, so that requirements.txt is inside it next to lambdas/: the default
# source hash then changes when either the package or the pins change, and the Docker fallback finds both
# under /asset-input. Everything else is excluded from the hash (and never walked: .venv, .git, cdk.out,
# node_modules). Glob semantics: later patterns win, "*" matches any base name but not dotfiles, hence ".*".
ASSET_EXCLUDE = [
    "*",
    ".*",
    f"!{REQUIREMENTS}",
    "!lambdas",
    f"!lambdas/{PACKAGE}",
    f"!lambdas/{PACKAGE}/**",
    "__pycache__",
    "*.pyc",
]

# Console scripts (tqdm, jp.py, ...) that pip --target writes: the Lambda runtime never runs them.
_UNNEEDED = ("bin",)


class BundlingError(RuntimeError):
    """The Lambda bundle could not be built (for example pip could not reach its index)."""


def pip_install_command(
    python: Sequence[str],
    requirements: str,
    target: str,
    *,
    platform_tags: Sequence[str],
    python_version: str,
) -> list[str]:
    """The pip command installing the pinned requirements as binary wheels for another platform."""
    return [
        *python,
        "-m",
        "pip",
        "install",
        "--no-compile",  # .pyc files would be for the building interpreter, not the Lambda runtime's
        "--quiet",
        "--disable-pip-version-check",
        *(option for tag in platform_tags for option in ("--platform", tag)),
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--target",
        target,
        "-r",
        requirements,
    ]


def build_bundle(
    project_root: Path, output_dir: Path, *, platform_tags: Sequence[str], python_version: str
) -> None:
    """Install requirements.txt for the platform into output_dir and copy the package beside them."""
    project_root = project_root.resolve()
    requirements = project_root / REQUIREMENTS
    package = project_root / "lambdas" / PACKAGE
    if not requirements.is_file() or not (package / "__init__.py").is_file():
        raise BundlingError(f"{project_root} has no {REQUIREMENTS} or no lambdas/{PACKAGE} package")
    command = pip_install_command(
        [sys.executable],
        str(requirements),
        str(output_dir),
        platform_tags=platform_tags,
        python_version=python_version,
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundlingError(
            f"pip could not install {requirements} for {platform_tags[0]}, CPython {python_version}: "
            f"{_pip_error(result.stderr)}"
        )
    for name in _UNNEEDED:
        shutil.rmtree(output_dir / name, ignore_errors=True)
    shutil.copytree(package, output_dir / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _pip_error(stderr: str) -> str:
    """pip's own error line, or its last line of output."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


@jsii.implements(cdk.ILocalBundling)
class LocalPipBundling:
    """Builds the bundle with this Python's pip, so synthesis needs PyPI but no Docker."""

    def __init__(self, project_root: Path, *, platform_tags: Sequence[str], python_version: str) -> None:
        self.project_root = project_root
        self.platform_tags = platform_tags
        self.python_version = python_version

    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **_options: Any) -> bool:
        """Build locally; False (so CDK falls back to Docker) only when this Python has no pip.

        A pip failure raises instead: falling back would end in a Docker error that hides the real cause,
        and on a machine with Docker the container's pip would fail the same way (usually the network).
        """
        if importlib.util.find_spec("pip") is None:
            return False
        build_bundle(
            self.project_root,
            Path(output_dir),
            platform_tags=self.platform_tags,
            python_version=self.python_version,
        )
        return True


def lambda_code(
    project_root: Path,
    *,
    runtime: aws_lambda.Runtime = aws_lambda.Runtime.PYTHON_3_13,
    architecture: aws_lambda.Architecture = aws_lambda.Architecture.ARM_64,
) -> aws_lambda.Code:
    """The handlers' code asset for a Python runtime and architecture: pass the Function's own two values."""
    if runtime.family != aws_lambda.RuntimeFamily.PYTHON or not runtime.name.startswith("python"):
        raise ValueError(f"the reindexer needs a Python runtime, not {runtime.name}")
    if architecture.name not in PLATFORM_TAGS:
        raise ValueError(f"no wheel platform known for the {architecture.name} architecture")
    python_version = runtime.name.removeprefix("python")
    platform_tags = PLATFORM_TAGS[architecture.name]
    pip_install = pip_install_command(
        ["python"],
        f"/asset-input/{REQUIREMENTS}",
        "/asset-output",
        platform_tags=platform_tags,
        python_version=python_version,
    )
    docker_script = " && ".join(
        [
            shlex.join([*pip_install, "--no-cache-dir"]),  # the container user may have no writable home
            f"rm -rf {' '.join('/asset-output/' + name for name in _UNNEEDED)}",
            f"cp -r /asset-input/lambdas/{PACKAGE} /asset-output/{PACKAGE}",
            f"find /asset-output/{PACKAGE} -name __pycache__ -prune -exec rm -rf {{}} +",
        ]
    )
    return aws_lambda.Code.from_asset(
        str(project_root),
        exclude=ASSET_EXCLUDE,
        bundling=cdk.BundlingOptions(
            image=runtime.bundling_image,
            command=["bash", "-c", docker_script],
            local=LocalPipBundling(project_root, platform_tags=platform_tags, python_version=python_version),
        ),
    )
