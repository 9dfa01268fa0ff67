"""tidings.d.ts type-checks an example with TypeScript (installed from npm into .cache/)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIX = ROOT / ".cache" / "node"
TSC = PREFIX / "node_modules" / ".bin" / "tsc"


def _typescript() -> Path:
    if not TSC.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: cannot fetch TypeScript")
        result = subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(PREFIX),
                "typescript@5",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"TypeScript could not be installed from npm: {result.stderr[-300:]}")
    return TSC


def test_typescript_declarations_check_an_example():
    tsc = _typescript()
    result = subprocess.run(
        [str(tsc), "-p", str(ROOT / "examples" / "typescript")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
