"""The layer contracts in pyproject.toml hold, and they would catch an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def _copy_of_the_code(tmp_path: Path) -> Path:
    for package in ("onboarding", "vehicles", "notifications"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc", "__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_code_keeps_its_layers() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "upward_import", "broken"),
    [
        # core is the bottom layer: it may not import identity
        ("onboarding/core/probe.py", "from onboarding.identity import accounts", "Layers"),
        # a service may not import the web layer
        (
            "onboarding/identity/probe.py",
            "from onboarding.web import rendering",
            "Services never import HTTP",
        ),
        # nor FastAPI
        ("vehicles/probe.py", "import fastapi", "Services never import HTTP"),
    ],
)
def test_an_upward_import_breaks_a_contract(
    tmp_path: Path, module: str, upward_import: str, broken: str
) -> None:
    root = _copy_of_the_code(tmp_path)
    (root / module).write_text(f'"""A probe."""\n\n{upward_import}\n')
    result = _lint_imports(root)
    assert result.returncode == 1, result.stdout
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout
