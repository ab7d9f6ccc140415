"""The figure check of ``tutorials/run_all.py``: a figure too small or blank is caught, a real one passes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUN_ALL = Path(__file__).resolve().parents[1] / "tutorials" / "run_all.py"


@pytest.fixture(scope="module")
def figure_problem():
    spec = importlib.util.spec_from_file_location("_tutorials_run_all", RUN_ALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.figure_problem


def test_a_drawn_figure_passes_and_blank_or_tiny_ones_do_not(figure_problem, tmp_path):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(10), np.arange(10) ** 2)
    fig.savefig(tmp_path / "ok.png", dpi=80)
    assert figure_problem(tmp_path / "ok.png") is None
    blank = plt.figure(figsize=(4, 3))
    blank.savefig(tmp_path / "blank.png", dpi=80)
    assert figure_problem(tmp_path / "blank.png").startswith("blank")
    fig.savefig(tmp_path / "tiny.png", dpi=20)
    assert "pixels, under" in figure_problem(tmp_path / "tiny.png")
    plt.close("all")
