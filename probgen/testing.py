"""The shared contract every probgen model meets, for families and user-written models alike.

``check_model(model, data)`` fits the model with every backend that claims it and checks what
each fit promises (as scikit-learn's ``check_estimator`` does for estimators).  A failure raises
``AssertionError`` naming the backend and the check; the return value is a table of what was
checked.

The per-item log-likelihood is compared with a brute force written independently of the
enumeration machinery: every discrete latent is set to each of its values in turn (one value
for all items at once, which is exact because items are independent given the globals), the
model is traced plainly, and the log-sum-exp over values is taken item by item; a discrete
latent outside the data plate is weighted by its posterior.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from probgen.arguments import ModelArgs
from probgen.errors import ConvergenceWarning
from probgen.fit import capable_methods, load
from probgen.fit import fit as fit_model
from probgen.model import GenerativeModel, sample_sites, scores_local_latents_generically
from probgen.model import model as as_model

__all__ = ["FAST_OPTIONS", "brute_force_log_prob", "check_model"]

#: Backend options small enough for a contract run (the contract is about shapes and identities,
#: not about converged posteriors).
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "mcmc": {"num_samples": 60, "warmup_steps": 60},
    "svi": {"num_steps": 300, "num_samples": 60},
    "em": {},
    "enum": {},
    "cd": {"num_steps": 200},
    "adversarial": {"num_steps": 50},
}


#: Most joint values of the discrete latents that brute force traces one by one.
BRUTE_FORCE_LIMIT = 4096


def _item_axis_sum(lp: Tensor, site: Mapping[str, Any], data_plate: str | None, n: int) -> Tensor | None:
    """Reduce a site's log-prob to one value per item of the data plate (None: not in it)."""
    frame = next((f for f in site["cond_indep_stack"] if f.vectorized and f.name == data_plate), None)
    if frame is None:
        return None
    full = lp.reshape((1,) * max(0, -frame.dim - lp.dim()) + tuple(lp.shape))
    axis = full.dim() + frame.dim
    full = full.movedim(axis, 0)
    return full.reshape(full.shape[0], -1).sum(-1).expand(n)


def brute_force_log_prob(
    model: GenerativeModel, data: Any, params: Mapping[str, Tensor]
) -> tuple[Tensor, float] | None:
    """Per-item log-likelihood and total log evidence by explicit sums over discrete values.

    Returns ``None`` when a discrete latent has plates besides the data plate (items would not
    be independent given one value per site) or the joint values number more than
    :data:`BRUTE_FORCE_LIMIT` (a chain of many steps), so brute force does not apply.
    """
    gm: GenerativeModel = model if isinstance(model, GenerativeModel) else as_model(model)
    roles = gm.roles(data)
    n = gm.num_items(data)
    fixed = {k: v for k, v in params.items() if k in roles.param_sites}
    values = {k: v for k, v in params.items() if k in roles.continuous_sites}
    # pyro.param values are set in a scoped param store, not substituted: the model reads its own
    # (pyro.module registers a network's weights under prefixed names that substitute misses)
    with pyro.get_param_store().scope():
        store = pyro.get_param_store()
        for k, v in fixed.items():
            store[k] = v
        return _brute_force(gm, data, roles, n, poutine.condition(gm.model, data=values))


def _brute_force(gm: GenerativeModel, data: Any, roles: Any, n: int, fn: Any) -> tuple[Tensor, float] | None:
    with poutine.block(), torch.no_grad():
        base: Any = poutine.trace(fn).get_trace(data)
    supports: dict[str, Tensor] = {}
    for name in roles.discrete_sites:
        node = base.nodes[name]
        other = [f for f in node["cond_indep_stack"] if f.vectorized and f.name != roles.data_plate]
        if other:
            return None
        supports[name] = node["fn"].enumerate_support(expand=False).reshape(-1)
    if math.prod(len(v) for v in supports.values()) > BRUTE_FORCE_LIMIT:
        return None
    outer = [s for s in roles.discrete_sites if s in roles.outer_discrete_sites]
    local = [s for s in roles.discrete_sites if s not in roles.outer_discrete_sites]
    per_outer: list[tuple[float, Tensor]] = []
    for a in itertools.product(*(supports[s].tolist() for s in outer)):
        rows = []
        prior = 0.0
        for b in itertools.product(*(supports[s].tolist() for s in local)):
            assign = dict(zip(outer + local, a + b, strict=True))
            cond = {s: torch.full_like(base.nodes[s]["value"], v) for s, v in assign.items()}
            with poutine.block(), torch.no_grad():
                tr: Any = poutine.trace(poutine.condition(fn, data=cond)).get_trace(data)
            item = torch.zeros(n, dtype=torch.float64)
            prior = 0.0
            for site in sample_sites(tr):
                if site["name"] in roles.continuous_sites:
                    continue
                lp = site["fn"].log_prob(site["value"]).detach().to(torch.float64)
                if site["name"] in outer:
                    prior += float(lp.sum())
                    continue
                per_item = _item_axis_sum(lp, site, roles.data_plate, n)
                if per_item is None:  # a site outside the data plate has no per-item share
                    return None
                item = item + per_item
            rows.append(item)
        per_outer.append((prior, torch.logsumexp(torch.stack(rows), 0)))
    if not outer:
        ll = per_outer[0][1]
        return ll, float(ll.sum())
    joint = torch.tensor([p + float(m.sum()) for p, m in per_outer], dtype=torch.float64)
    evidence = torch.logsumexp(joint, 0)
    weights = joint - evidence
    ll = torch.logsumexp(torch.stack([w + m for w, (_, m) in zip(weights, per_outer, strict=True)]), 0)
    return ll, float(evidence)


def _state() -> tuple[Any, ...]:
    store = pyro.get_param_store()
    return (
        torch.random.get_rng_state().clone(),
        repr(np.random.get_state()[1][:8]),  # type: ignore[index]  # noqa: NPY002
        tuple(sorted(store.keys())),
        tuple(float(store[k].detach().sum()) for k in sorted(store.keys())),
        torch.get_default_dtype(),
        torch.get_num_threads(),
    )


def _close(a: Tensor, b: Tensor, what: str, method: str, tol: float) -> None:
    a64, b64 = a.detach().to(torch.float64).reshape(-1), b.detach().to(torch.float64).reshape(-1)
    if a64.shape != b64.shape:
        raise AssertionError(f"[{method}] {what}: shapes differ, {tuple(a.shape)} against {tuple(b.shape)}")
    err = float((a64 - b64).abs().max()) if a64.numel() else 0.0
    scale = max(1.0, float(b64.abs().max()) if b64.numel() else 1.0)
    if not err <= tol * scale:
        raise AssertionError(
            f"[{method}] {what}: largest difference {err:.3g} > {tol:g} (relative to {scale:.3g})"
        )


def _check(cond: bool, method: str, what: str) -> None:
    if not cond:
        raise AssertionError(f"[{method}] {what}")


def _check_sample(fit: Any, prepared: Any, method: str, seed: int) -> Any:
    """``fit.sample`` gives items shaped and typed like the data; returns 4 items drawn with ``seed``.

    A model of several arguments draws its response at the training inputs instead
    (``fit.posterior_predictive(data=<the inputs>)``): shaped and typed like the response."""
    if isinstance(prepared, ModelArgs):
        inputs = {k: v for k, v in prepared.values.items() if k not in prepared.observed}
        reps = fit.posterior_predictive(num_samples=4, data=inputs)
        for k in prepared.observed:
            y = prepared.values[k]
            got = next(iter(reps.values())) if len(reps) == 1 else reps.get(k)
            _check(got is not None, method, f"posterior_predictive has no replicate of {k!r}")
            _check(tuple(got.shape[2:]) == tuple(y.shape), method, f"replicate shape {tuple(got.shape)}")
            _check(got.dtype == y.dtype, method, f"replicate dtype {got.dtype} != data {y.dtype}")
        return reps
    new = fit.sample(4, seed=seed)
    if hasattr(new, "columns") and hasattr(new, "to_numpy"):  # labelled rows (a network's states)
        width = prepared.shape[1] if isinstance(prepared, Tensor) and prepared.dim() > 1 else new.shape[1]
        _check(new.shape == (4, width), method, f"sample frame shape {new.shape}")
        return new
    if isinstance(prepared, Tensor):
        # with no plate over the data (one pyro.markov sequence) the whole data are one item
        one_item = fit.model.num_items(prepared) == 1 and len(prepared) > 1
        item = tuple(prepared.shape) if one_item else tuple(prepared.shape[1:])
        _check(tuple(new.shape) == (4,) + item, method, f"sample shape {tuple(new.shape)}")
        _check(new.dtype == prepared.dtype, method, f"sample dtype {new.dtype} != data {prepared.dtype}")
    return new


def _check_bad_arguments(fit: Any, prepared: ModelArgs, method: str) -> None:
    """A NaN in a per-item floating argument is refused when scoring."""
    for k in prepared.per_item:
        v = prepared.values[k]
        if v.is_floating_point():
            bad = {**prepared.values, k: v.to(torch.float64).clone()}
            bad[k].reshape(-1)[0] = float("nan")
            try:
                fit.log_prob({n: b.numpy() if isinstance(b, Tensor) else b for n, b in bad.items()})
            except ValueError:
                return
            raise AssertionError(f"[{method}] log_prob accepted a NaN in argument {k!r}")


def _reloaded(fit: Any, gm: GenerativeModel, method: str) -> Any:
    """``fit`` saved and loaded back; its params must come back identical."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.npz"
        fit.save(path)
        back = load(path, model=None if gm.get_config() is not None else gm)
    for k, v in fit.params.items():
        _close(back.params[k], v, f"save/load params[{k!r}]", method, 0.0)
    return back


def _check_implicit(fit: Any, gm: GenerativeModel, prepared: Any, method: str, seed: int) -> dict[str, str]:
    """The contract of a model with no likelihood (``density == "none"``, e.g. a GAN)."""
    rows: dict[str, str] = {}
    idata: Any = fit.to_arviz()
    _check("log_likelihood" not in idata.groups(), method, "to_arviz has a log_likelihood group")
    try:
        fit.log_prob()
    except TypeError:
        pass
    else:
        raise AssertionError(f"[{method}] log_prob gave values for a model with no likelihood")
    rows["log_prob refused (no likelihood)"] = "ok"
    new = _check_sample(fit, prepared, method, seed)
    rows["sample shape"] = "ok"
    back = _reloaded(fit, gm, method)
    _close(back.sample(4, seed=seed), new, "save/load samples with the same seed", method, 1e-6)
    rows["save/load"] = "ok"
    if isinstance(prepared, Tensor):
        bad = prepared.to(torch.float64).clone()
        bad.reshape(-1)[0] = float("nan")
        wrong = torch.cat([prepared, prepared[:, :1]], 1).numpy() if prepared.dim() > 1 else None
        for what, x in (("a NaN", bad.numpy()), ("an extra feature", wrong)):
            if x is None:
                continue
            try:
                fit._data(x)
            except ValueError:
                continue
            raise AssertionError(f"[{method}] data with {what} accepted")
        rows["bad input refused"] = "ok"
    return rows


def check_model(
    model: Any,
    data: Any,
    *,
    log_prob_by_hand: Callable[[Mapping[str, Tensor], Tensor], Tensor] | None = None,
    marginal_by_hand: Callable[[Mapping[str, Tensor], Tensor], Tensor] | None = None,
    methods: list[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, str]]:
    """Fit ``model`` with every backend that serves it and check the shared contract.

    Checks, per backend: the fit leaves global state (RNGs, param store, dtype, threads) as it
    found it; the same seed gives the same fit; ``to_arviz`` has (chain, draw) posterior dims and
    a (chain, draw, item) log-likelihood; ``log_prob`` equals ``log_prob_by_hand`` (when given)
    or a brute-force sum over the discrete latents; BIC's log-likelihood is the true total
    evidence (skipped, with the reason in the report, when continuous local latents are
    amortised by the guide and absent from the draws, as in a VAE); ``sample`` returns items shaped like the data; save/load keeps the estimates and
    the scores; ``predict`` agrees with ``predict_proba``; NaN and wrongly shaped data are refused.

    Parameters
    ----------
    model : GenerativeModel or callable
        A family instance or a Pyro function (wrapped by :func:`probgen.model`).
    data : array-like
        Training data.
    log_prob_by_hand : callable, optional
        ``f(params, data) -> (n_items,)`` per-item log-likelihood written by hand, evaluated at
        a fit's ``params`` (point fits) or at each posterior draw (posterior fits).  For a model
        with continuous latents inside its data plate it is the conditional
        ``log p(x_i | z_i, theta)``, compared with ``fit.log_prob(local="conditional")``.
    marginal_by_hand : callable, optional
        ``f(params, data) -> (n_items,)``: for a model with continuous latents inside its data
        plate, the exact ``log p(x_i | theta)`` with them integrated out (e.g. a closed-form
        Gaussian), compared with the importance-sampled ``fit.log_prob()`` within five of its
        Monte Carlo standard errors.
    methods : list of str, optional
        Backends to run (default: every registered backend that serves the model).
    options : dict, optional
        Backend options by method, merged over :data:`FAST_OPTIONS`.
    seed : int, default 0

    Returns
    -------
    dict
        ``{method: {check: "ok" or "skipped: <reason>"}}``.
    """
    gm = as_model(model)
    prepared = gm.prepare_data(data)
    served = capable_methods(gm, prepared)
    methods = served if methods is None else list(methods)
    missing = [m for m in methods if m not in served]
    if missing:
        raise AssertionError(f"backends {missing} do not serve {gm.name}; those that do: {served}")
    report: dict[str, dict[str, str]] = {}
    roles = gm.roles(prepared)
    n = gm.num_items(prepared)
    for method in methods:
        opts = {**FAST_OPTIONS.get(method, {}), **(options or {}).get(method, {})}
        rows: dict[str, str] = {}
        before = _state()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = fit_model(gm, data, method=method, seed=seed, progress=False, **opts)
            again = fit_model(gm, data, method=method, seed=seed, progress=False, **opts)
        after = _state()
        labels = (
            "torch RNG",
            "numpy RNG",
            "param store names",
            "param store values",
            "default dtype",
            "threads",
        )
        changed = [
            lab
            for lab, b, a in zip(labels, before, after, strict=True)
            if not (b.equal(a) if isinstance(b, Tensor) else b == a)
        ]
        _check(not changed, method, f"the fit changed global state: {changed}")
        rows["global state kept"] = "ok"
        for k, v in fit.params.items():
            _close(again.params[k], v, f"same seed, params[{k!r}]", method, 0.0)
        rows["same seed, same fit"] = "ok"
        if gm.density == "none":  # an implicit model: generation, persistence and refusals only
            rows.update(_check_implicit(fit, gm, prepared, method, seed))
            report[method] = rows
            continue

        idata: Any = fit.to_arviz()
        ll = fit.pointwise_log_likelihood()
        chains, draws = (1, 1) if not fit.posterior else next(iter(fit.posterior.values())).shape[:2]
        _check(
            tuple(ll.shape) == (chains, draws, n), method, f"pointwise log-likelihood shape {tuple(ll.shape)}"
        )
        var = next(iter(idata.log_likelihood.data_vars.values()))
        _check(var.shape == (chains, draws, n), method, f"to_arviz log_likelihood shape {var.shape}")
        for name in roles.continuous_sites if fit.posterior else []:
            _check(idata.posterior[name].shape[:2] == (chains, draws), method, f"posterior {name!r} dims")
        rows["to_arviz shapes"] = "ok"

        lp, se = fit.log_prob(return_se=True)
        _check(
            tuple(lp.shape) == (n,) and bool(torch.isfinite(lp).all()), method, "log_prob: n finite values"
        )
        sets = fit._draw_params()
        integrated = bool(roles.local_sites) and scores_local_latents_generically(gm)
        if log_prob_by_hand is not None:
            hand = torch.stack([log_prob_by_hand(p, prepared).to(torch.float64) for p in sets])
            expect = torch.logsumexp(hand, 0) - math.log(len(sets))
            got = fit.log_prob(local="conditional") if integrated else lp
            _close(got, expect, "log_prob against the hand-written per-item log-likelihood", method, 1e-4)
            rows["log_prob by hand"] = "ok"
        if integrated and marginal_by_hand is not None:
            exact = torch.stack([marginal_by_hand(p, prepared).to(torch.float64) for p in sets])
            expect = torch.logsumexp(exact, 0) - math.log(len(sets))
            gap = (lp.double() - expect).abs()
            _check(
                bool((gap <= 5.0 * se.double() + 1e-3).all()),
                method,
                f"importance-sampled marginal log_prob against the exact marginal: largest gap "
                f"{float(gap.max()):.4g} with standard errors up to {float(se.max()):.3g}",
            )
            rows["marginal log_prob"] = "ok"
        elif integrated:
            rows["marginal log_prob"] = (
                "skipped: no marginal_by_hand to compare the importance-sampled scores with"
            )
        picks = sorted({0, len(sets) // 2, len(sets) - 1})
        # continuous local latents absent from the draws are amortised by the guide (a VAE's
        # code z): p(x) is an integral over them, which no sum over discrete values computes
        amortised = [s for s in roles.local_sites if s not in sets[0]]
        unnormalised = gm.density == "unnormalised"
        brute = (
            [None]
            if amortised or unnormalised
            else [brute_force_log_prob(gm, prepared, sets[i]) for i in picks]
        )
        if unnormalised:
            rows["log_prob brute force"] = (
                "skipped: an unnormalised density (its sites give -F(x) without log Z); pass "
                "log_prob_by_hand to check log_prob"
            )
        elif amortised:
            rows["log_prob brute force"] = (
                f"skipped: continuous local latents {amortised} are amortised by the guide (not in the "
                "draws), so the per-item likelihood is an integral that brute force cannot sum"
            )
        elif brute[0] is None:
            rows["log_prob brute force"] = (
                "skipped: discrete latents in several plates or outside the data plate, or more than "
                f"{BRUTE_FORCE_LIMIT} joint values"
            )
        else:
            flat = ll.reshape(-1, n)
            for i, b in zip(picks, brute, strict=True):
                assert b is not None
                _close(
                    flat[i], b[0], f"pointwise log-likelihood of draw {i} against brute force", method, 1e-4
                )
            if not fit.posterior:
                _close(
                    torch.tensor(fit.log_likelihood()),
                    torch.tensor(brute[0][1]),
                    "BIC's total log-likelihood",
                    method,
                    1e-4,
                )
            rows["log_prob brute force"] = "ok"

        _check_sample(fit, prepared, method, seed)
        rows["sample shape"] = "ok"
        back = _reloaded(fit, gm, method)
        _close(back.log_prob(), lp, "save/load log_prob", method, 1e-6)
        rows["save/load"] = "ok"

        per_item = [s for s in roles.discrete_sites if s not in roles.outer_discrete_sites]
        if len(roles.discrete_sites) == 1 and per_item:
            proba, label = fit.predict_proba(), fit.predict()
            best = proba.gather(-1, label.long().reshape(proba.shape[:-1] + (1,)))[..., 0]
            _close(best, proba.max(-1).values, "predict is the argmax of predict_proba", method, 1e-6)
            rows["predict vs predict_proba"] = "ok"
        else:
            rows["predict vs predict_proba"] = "skipped: not one per-item discrete latent"

        if isinstance(prepared, ModelArgs):
            _check_bad_arguments(fit, prepared, method)
            rows["bad input refused"] = "ok"
        if isinstance(prepared, Tensor):
            bad = prepared.to(torch.float64).clone()
            bad.reshape(-1)[0] = float("nan")
            if gm.accepts_missing:
                rows["NaN refused"] = "skipped: the model reads NaN as a missing value (accepts_missing)"
            else:
                try:
                    fit.log_prob(bad.numpy())
                except ValueError:
                    pass
                else:
                    raise AssertionError(f"[{method}] log_prob accepted data with a NaN")
            if prepared.dim() > 1:
                wrong = torch.cat([prepared, prepared[:, :1]], 1).numpy()
                try:
                    fit.log_prob(wrong)
                except ValueError:
                    pass
                else:
                    raise AssertionError(f"[{method}] log_prob accepted items with an extra feature")
            rows["bad input refused"] = "ok"
        report[method] = rows
    return report
