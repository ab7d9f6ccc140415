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


def test_the_wheel_carries_its_licence_one_version_and_builds_without_warnings(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    log = build.stdout + build.stderr
    for phrase in (
        "is absent from the `packages`",
        "SetuptoolsDeprecationWarning",
        "license` as a TOML table",
    ):
        assert phrase not in log, phrase
    (wheel,) = tmp_path.glob("probgen-*.whl")
    archive = zipfile.ZipFile(wheel)
    meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    text = archive.read(meta).decode()
    assert "License-Expression: Apache-2.0" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    import probgen

    assert f"Version: {probgen.__version__}" in text  # one version source: probgen.__version__
    assert (ROOT / "CHANGELOG.md").read_text().count(probgen.__version__) >= 1
