"""The installed ``probgen`` command, run as a subprocess the way scripts run it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import probgen as pg
from probgen.models import GaussianMixture

COMMAND = str(Path(sys.executable).parent / "probgen")


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"probgen {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    pg.datasets.load_old_faithful().to_csv(d / "faithful.csv", index=False)
    (d / "mymodels.py").write_text(
        "import pyro, pyro.distributions as dist\n"
        "def normal_mean(data=None):\n"
        "    mu = pyro.sample('mu', dist.Normal(0.0, 100.0))\n"
        "    with pyro.plate('data', 10 if data is None else len(data)):\n"
        "        pyro.sample('obs', dist.Normal(mu, 10.0), obs=data)\n"
    )
    return d


def test_fit_score_and_sample_a_family_from_a_csv(workdir):
    run(
        "fit",
        "GaussianMixture(n_components=2, covariance_type='full')",
        "faithful.csv",
        "-o",
        "gmm.npz",
        "--no-progress",
        cwd=workdir,
    )
    data = pd.read_csv(workdir / "faithful.csv")
    # the same fit through the Python API gives the same per-item scores
    api = pg.fit(
        GaussianMixture(n_components=2, covariance_type="full"), data, method="em", seed=0, progress=False
    )
    scores = pd.read_csv(io.StringIO(run("score", "gmm.npz", "faithful.csv", cwd=workdir).stdout))
    assert list(scores.columns) == ["log_prob"] and len(scores) == len(data)
    np.testing.assert_allclose(scores["log_prob"].to_numpy(), api.log_prob(data).double().numpy(), rtol=1e-6)
    run("sample", "gmm.npz", "-n", "500", "--seed", "1", "-o", "new.csv", cwd=workdir)
    new = pd.read_csv(workdir / "new.csv")
    assert list(new.columns) == ["eruptions", "waiting"] and len(new) == 500
    # generated items come from the fitted mixture: their mean is the mixture's mean
    mean = (api.params["weights"][:, None].double() * api.params["locs"].double()).sum(0).numpy()
    np.testing.assert_allclose(new.mean().to_numpy(), mean, rtol=0.05)
    summary = run("summary", "gmm.npz", "--csv", cwd=workdir).stdout
    assert "weights[0]" in summary
    assert run("check", "gmm.npz", cwd=workdir).stdout.startswith("healthy")


@pytest.mark.slow  # an MCMC fit in a subprocess
def test_a_user_function_fits_by_module_and_name(workdir):
    y = np.random.default_rng(0).normal(5.0, 10.0, 40)
    np.save(workdir / "y.npy", y)
    run(
        "fit",
        "mymodels:normal_mean",
        "y.npy",
        "-m",
        "mcmc",
        "-O",
        "num_samples=300",
        "-O",
        "warmup_steps=300",
        "-o",
        "mean.npz",
        "--no-progress",
        cwd=workdir,
    )
    table = pd.read_csv(
        io.StringIO(
            run("summary", "mean.npz", "--model", "mymodels:normal_mean", "--csv", cwd=workdir).stdout
        ),
        index_col=0,
    )
    post_sd = 1.0 / np.sqrt(1 / 100.0**2 + len(y) / 10.0**2)  # conjugate normal mean
    post_mean = post_sd**2 * y.sum() / 10.0**2
    assert abs(table.loc["mu", "mean"] - post_mean) < 0.4 * post_sd
    refused = run("summary", "mean.npz", cwd=workdir, check=False)
    assert refused.returncode == 2 and "--model module:function" in refused.stderr


@pytest.mark.parametrize(
    "args, phrase",
    [
        (("fit", "NoSuchModel", "faithful.csv", "-o", "x.npz"), "unknown model"),
        (("fit", "GaussianMixture(n_components=2)", "missing.csv", "-o", "x.npz"), "no data file"),
        (
            ("fit", "GaussianMixture(n_components=2)", "faithful.csv", "-o", "x.npz", "-O", "bogus_option=1"),
            "bogus_option",
        ),
        (("score", "nothing.npz", "faithful.csv"), "no saved fit"),
        (("calibrate", "--row", "no such row"), "unknown --row"),
    ],
)
def test_refusals_exit_non_zero_with_one_line(workdir, args, phrase):
    done = run(*args, cwd=workdir, check=False)
    assert done.returncode == 2
    assert phrase in done.stderr and "Traceback" not in done.stderr


def test_every_command_has_help(capsys):
    from probgen.cli import main

    for command in ("fit", "summary", "check", "score", "sample", "plot", "calibrate", "demo", "datasets"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert "usage: probgen " + command in capsys.readouterr().out


def test_plot_writes_an_image(workdir):
    pytest.importorskip("matplotlib")
    fit = pg.fit(
        GaussianMixture(n_components=2), pg.datasets.load_old_faithful(), method="em", progress=False
    )
    fit.save(workdir / "plain.npz")
    run("plot", "plain.npz", "-o", "plain.png", cwd=workdir)
    image = (workdir / "plain.png").read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 5000
    assert torch.is_tensor(fit.params["locs"])
