"""A built wheel imports probgen.models and probgen.inference from outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_imports_from_outside_the_repo(tmp_path):
    wheels = tmp_path / "wheels"
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
            str(wheels),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("probgen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "probgen/models/__init__.py" in names and "probgen/inference/em.py" in names
    assert "probgen/data/old_faithful.csv" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import probgen, probgen.models, probgen.inference;"
        f"assert probgen.__file__.startswith({str(target)!r}), probgen.__file__;"
        "print(len(probgen.datasets.load_old_faithful()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "272"
