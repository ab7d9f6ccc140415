"""Fits and scores from several threads take turns on Pyro's process-wide state: the same numbers
as one after the other, never a crash."""

from __future__ import annotations

import threading

import pyro
import pyro.distributions as dist
import torch

import probgen as pg
from probgen.models import GaussianMixture


def normal_mean(data=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", 5 if data is None else len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def _run_in_threads(jobs):
    results, errors = [None] * len(jobs), []

    def work(i, job):
        try:
            results[i] = job()
        except Exception as err:  # noqa: BLE001  (collected and re-raised below)
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_fits_in_threads_equal_the_same_fits_one_after_the_other():
    y = torch.randn(30) + 1.0
    x = pg.datasets.load_old_faithful()
    jobs = [
        lambda: pg.fit(normal_mean, y, method="svi", seed=0, progress=False, num_steps=300).params["mu"],
        lambda: pg.fit(GaussianMixture(2), x, method="svi", seed=1, progress=False, num_steps=200).params[
            "locs"
        ],
        lambda: pg.fit(
            normal_mean, y, method="mcmc", seed=2, progress=False, num_samples=50, warmup_steps=50
        ).posterior["mu"],
        lambda: pg.fit(GaussianMixture(2), x, method="em", seed=3, progress=False).log_prob(x),
    ]
    sequential = [job() for job in jobs]
    threaded = _run_in_threads(jobs)
    for a, b in zip(sequential, threaded, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_fit_leaves_no_pyro_param_in_the_users_store():
    pyro.clear_param_store()

    def with_param(data=None):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", 5 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    pg.fit(with_param, torch.randn(20), method="svi", seed=0, progress=False, num_steps=50)
    assert list(pyro.get_param_store().keys()) == []


def test_small_fits_run_on_one_thread_and_restore_the_setting():
    seen = []

    def recording(data=None):
        seen.append(torch.get_num_threads())
        return normal_mean(data)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pg.fit(recording, torch.randn(20), method="svi", seed=0, progress=False, num_steps=20)
        assert seen[-1] == 1  # 20 numbers: too little work to share between threads
        assert torch.get_num_threads() == 2
        pg.fit(recording, torch.randn(20), method="svi", seed=0, progress=False, num_steps=20, num_threads=2)
        assert seen[-1] == 2
    finally:
        torch.set_num_threads(before)
