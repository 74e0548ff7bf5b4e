"""A wheel install finds its configs: conf/ ships inside the package as dgsolve/conf."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_config(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("dgsolve-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "dgsolve/conf/" + str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert expected and expected <= names
    assert "dgsolve/games/bargain/kernel.py" in names
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "dgsolve").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # every package is listed in pyproject
