"""Expectation-maximisation for models with discrete local latents and point-estimated globals.

A family that offers ``init_params``/``e_step``/``m_step`` hooks gets its closed-form fast path.
Any other model gets a generic EM built on Pyro's enumeration:

* E-step: the model is traced under parallel enumeration with the global sites set to the current
  values; the log evidence is contracted exactly, and the posterior weight of every log-factor is
  its gradient (``d log Z / d log f``), the posterior marginal over that factor's scope.
* M-step: the expected complete-data log-likelihood ``Q(theta) = sum_f <w_f, log f(theta)>``
  (plus the log prior when ``map=True``) is maximised over the unconstrained globals by L-BFGS.
  A step that does not raise ``Q`` is rejected, so the log-likelihood never decreases.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor
from torch.distributions import biject_to
from tqdm.auto import tqdm

from probgen.backend import BackendBase, Option, register_backend
from probgen.capabilities import ChunkedEM, ClosedFormEM, MasksObserved, ScaledConvergence, missing
from probgen.errors import ConvergenceWarning, ModelNotSupportedError
from probgen.fit import Fit
from probgen.model import GenerativeModel
from probgen.posterior import EnumFactors, enum_factors, pointwise_log_likelihood
from probgen.state import seed_everything
from probgen.streaming import ChunkedData

__all__ = ["EM"]

_INIT_SAMPLE = 100_000  # rows drawn (at least one chunk) to start EM over chunks
_CHUNK_OPTIONS = ("online", "step_exponent", "step_offset")


def _has_fast_path(model: GenerativeModel) -> bool:
    return isinstance(model, ClosedFormEM)


class _NoBar:
    """Stands in for a hidden tqdm bar: a disabled tqdm still costs some 50 us to set up, a
    visible share of a whole fit on small data."""

    disable = True

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, progress: bool, desc: str) -> Any:
    return tqdm(total=total, desc=desc, leave=False) if progress else _NoBar()


class EM(BackendBase):
    """Expectation-maximisation (``method="em"``).

    Options (scikit-learn's names): ``max_iter`` (1000), ``tol`` (1e-6, on the change of the
    per-item log-likelihood), ``n_init`` (1 restart), ``init`` (a strategy name, e.g.
    ``"kmeans"``/``"random"``, or a dict of starting values by site name), and for the generic
    path ``map`` (False: maximum likelihood; True: add the priors) and ``m_step_iters`` (20
    L-BFGS iterations per M-step).  A family's ``em_defaults()`` supplies its own defaults.

    **Data in chunks** (``probgen.fit(model, X, method="em", chunk_size=10_000)``, ``X`` an
    array or a numpy memmap larger than memory), for families with additive sufficient
    statistics (the hooks ``init_params``, ``chunk_stats`` and ``m_step_from_stats``: the
    Gaussian, Bernoulli, categorical and Poisson mixtures):

    * Starting values come from ``init_params`` on ``max(chunk_size, min(N, 100_000))`` rows
      drawn at random without replacement (one read of those rows), or from a dict ``init``.
    * Batch EM (default): each iteration reads every chunk once, sums the statistics and the
      log-likelihood, and takes the M-step from the sums, so it follows the in-memory iterates
      (same fixed point, same ``tol``/``max_iter`` rule, same ``n_init`` restarts).  Only one
      chunk is in memory at a time.  A short last chunk (under half a chunk) is read together
      with the one before it.  An emptied component keeps its previous parameters (in memory
      it is re-seeded on the worst-explained item) and is reported with a ``ConvergenceWarning``.
    * ``online=True``: online EM (Cappe and Moulines, 2009), one pass over the chunks in order
      (``max_iter`` passes when ``max_iter`` is given).  The running statistics start from
      those of the starting sample (scaled to ``N`` items, a warm start); after chunk ``t`` they
      become ``s <- (1 - g_t) s + g_t (N / n_t) stats(chunk t)`` and the parameters are the
      M-step of ``s``, with step sizes ``g_t = (t + step_offset) ** -step_exponent``;
      ``step_exponent`` (0.6) must lie in (0.5, 1], ``step_offset`` (1.0) is ``>= 0``.  No
      convergence test is made; ``history`` holds the log-likelihood of each pass (each chunk
      at the parameters in force when it was read).

    The fit carries no data (``fit.data is None``: pass the data to ``log_prob``, ``bic``,
    ...); ``log_evidence`` is the last total log-likelihood and ``extras`` holds ``num_items``,
    ``chunk_size``, ``n_iter`` and ``online``.

    Examples
    --------
    >>> import numpy as np
    >>> import probgen as pg
    >>> from probgen.models.gaussian_mixture import GaussianMixture
    >>> x = np.random.default_rng(0).normal(size=(3000, 2)) + np.repeat([[0, 0], [6, 6]], 1500, 0)
    >>> fit = pg.fit(GaussianMixture(2), x, method="em", chunk_size=1000, progress=False)
    >>> fit.data is None, fit.extras["num_items"]
    (True, 3000)
    """

    name = "em"
    label = "EM"
    accepts_chunks = True
    accepts_missing = True  # the closed-form hooks of a MissingValues model read NaN as missing
    options = (
        Option(
            "max_iter", "int", 1000, "EM iterations at most (a family may set its own)", aliases=("n_iter",)
        ),
        Option("tol", "float0", 1e-6, "convergence: change of the per-item log-likelihood"),
        Option("n_init", "int", 1, "restarts from new starting values; the best is kept"),
        Option("init", "any", "random", 'strategy name ("kmeans++", "random", ...) or dict of values'),
        Option("map", "bool", False, "generic path: maximise the posterior (add the priors)"),
        Option("m_step_iters", "int", 20, "generic path: L-BFGS iterations per M-step"),
        Option("verbose", "any", 0, "accepted for scikit-learn compatibility; progress= shows progress"),
        Option("online", "bool", False, "with chunk_size=: online EM, one pass over the chunks"),
        Option("step_exponent", "any", 0.6, "online EM: step sizes (t + step_offset) ** -step_exponent"),
        Option("step_offset", "any", 1.0, "online EM: offset of the step sizes"),
    )

    def missing_refusal(self, model: GenerativeModel) -> str | None:
        """Missing cells are marginalised by a MissingValues model's closed-form hooks."""
        if isinstance(model, ClosedFormEM | MasksObserved):  # MasksObserved: the generic path
            return None
        return (
            f"{model.name} has no closed-form EM hooks (ClosedFormEM) to marginalise missing cells "
            "and does not mask its observed sites (MasksObserved)"
        )

    def refusal(self, model: GenerativeModel, data: Any) -> str | None:
        if _has_fast_path(model):
            return None
        roles = model.roles(data)
        if roles.local_sites:
            return (
                f"it has continuous per-item latent sites {list(roles.local_sites)}, which EM cannot "
                "point-estimate or sum out"
            )
        if not roles.global_sites and not roles.discrete_sites:
            return "it has no latent sites to estimate"
        return None

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit:
        defaults: dict[str, Any] = {"max_iter": 1000, "tol": 1e-6, "n_init": 1, "init": "random"}
        if isinstance(model, ClosedFormEM):
            defaults.update(model.em_defaults())
        options = self.check_options(options)
        opts = {**defaults, **options}
        max_iter, tol, n_init = opts["max_iter"], opts["tol"], opts["n_init"]
        init = opts["init"]
        if not isinstance(init, str | Mapping):
            raise TypeError(
                f"init must be a strategy name or a dict of starting values; got {type(init).__name__}."
            )
        chunked = isinstance(data, ChunkedData)
        online = opts.get("online", False)
        if not isinstance(online, bool):
            raise TypeError(f"online must be a bool; got {type(online).__name__}.")
        if online and not chunked:
            raise ValueError(
                "online=True runs online EM over data read in chunks; pass chunk_size= (rows per chunk) too."
            )
        step_options = sorted(set(options) & {"step_exponent", "step_offset"})
        if step_options and not online:
            raise ValueError(f"{', '.join(step_options)} only apply to online EM; pass online=True too.")
        step_exponent = opts.get("step_exponent", 0.6)
        if (
            isinstance(step_exponent, bool)
            or not isinstance(step_exponent, int | float)
            or not 0.5 < step_exponent <= 1.0
        ):
            raise ValueError(f"step_exponent must be a number in (0.5, 1]; got {step_exponent!r}.")
        step_offset = opts.get("step_offset", 1.0)
        if (
            isinstance(step_offset, bool)
            or not isinstance(step_offset, int | float)
            or not (math.isfinite(step_offset) and step_offset >= 0)
        ):
            raise ValueError(f"step_offset must be a finite number >= 0; got {step_offset!r}.")
        if chunked:
            return self._fit_chunked(
                model,
                data,
                seed=seed,
                progress=progress,
                max_iter=max_iter,
                tol=float(tol),
                n_init=n_init,
                init=init,
                online=online,
                passes=int(options.get("max_iter", 1)),
                step_exponent=float(step_exponent),
                step_offset=float(step_offset),
            )

        fast = _has_fast_path(model)
        scale = float(
            model.em_convergence_scale(data)
            if isinstance(model, ScaledConvergence)
            else model.num_items(data)
        )
        generic = (
            None
            if fast
            else _GenericEM(model, data, bool(opts.get("map", False)), int(opts.get("m_step_iters", 20)))
        )
        gen = torch.Generator().manual_seed(seed)
        bar = _progress_bar(n_init * max_iter, progress, "EM")
        with _singular_covariance(model):
            best = self._restarts(
                model, data, fast, generic, gen, bar, init, n_init, max_iter, tol, scale, seed
            )
        bar.close()
        final, params, history, converged = _best_restart(best, "EM", max_iter, tol)
        params = {k: v.detach() for k, v in params.items()}
        return Fit(
            model=model,
            data=data,
            method=self.name,
            params=params,
            posterior=None,
            history=np.asarray(history, dtype=float),
            converged=converged,
            log_evidence=final,
            extras={"n_iter": len(history), "fast_path": fast},
            seed=seed,
        )

    @staticmethod
    def _restarts(
        model: Any,
        data: Any,
        fast: bool,
        generic: Any,
        gen: torch.Generator,
        bar: Any,
        init: Any,
        n_init: int,
        max_iter: int,
        tol: float,
        scale: float,
        seed: int,
    ) -> Any:
        """Every restart of EM; the best (final log-likelihood, params, history, converged)."""
        best: tuple[float, dict[str, Tensor], list[float], bool] | None = None
        for restart in range(n_init):
            seed_everything(seed + restart)
            if fast:
                params = model.init_params(data, init=init, generator=gen)
            else:
                assert generic is not None
                params = generic.init_params(init)
            history: list[float] = []
            converged = False
            for it in range(max_iter):
                if fast:
                    stats, ll = model.e_step(data, params)
                    ll = float(ll)
                else:
                    assert generic is not None
                    stats, ll = generic.e_step(params)
                if not math.isfinite(ll):
                    raise FloatingPointError(
                        f"EM log-likelihood became {ll} at iteration {it} of restart {restart}; "
                        "the data or starting values make a component degenerate."
                    )
                history.append(ll)
                bar.update(1)
                if not getattr(bar, "disable", True):
                    bar.set_postfix(loglik=f"{ll:.4g}")
                # M-step before the convergence test, as scikit-learn and hmmlearn do: the returned
                # parameters are one update past the last E-step.
                params = model.m_step(data, stats) if fast else generic.m_step(params, stats)
                if it > 0 and abs(history[-1] - history[-2]) / scale < tol:
                    converged = True
                    break
            bar.update(max_iter - len(history))
            final = history[-1]
            if best is None or final > best[0]:
                best = (final, params, history, converged)
        return best

    # ---------------------------------------------------------------- data in chunks
    def _fit_chunked(
        self,
        model: GenerativeModel,
        data: ChunkedData,
        *,
        seed: int,
        progress: bool,
        max_iter: int,
        tol: float,
        n_init: int,
        init: Any,
        online: bool,
        passes: int,
        step_exponent: float,
        step_offset: float,
    ) -> Fit:
        if not isinstance(model, ChunkedEM):
            raise ModelNotSupportedError(
                f"method='em' with chunk_size= needs additive sufficient statistics; {model.name} does "
                f"not offer the capability {', '.join(missing(model, ChunkedEM))} (init_params, chunk_stats "
                "and m_step_from_stats). Fit it in memory (drop chunk_size=), or use a family that offers it."
            )
        n_items = data.num_items
        gen = torch.Generator().manual_seed(seed)
        bounds = _chunk_bounds(n_items, data.chunk_size)
        best: tuple[float, dict[str, Tensor], list[float], bool] | None = None
        total = n_init * (passes * len(bounds) if online else max_iter)
        bar = _progress_bar(total, progress, "online EM" if online else "EM")
        for restart in range(n_init):
            seed_everything(seed + restart)
            sample = data.sample(max(data.chunk_size, min(n_items, _INIT_SAMPLE)), gen)
            params = model.init_params(sample, init=init, generator=gen)
            if online:
                params, history = self._online(
                    model, data, bounds, sample, params, passes, step_exponent, step_offset, bar
                )
                converged = True
            else:
                params, history, converged = self._batch(model, data, bounds, params, max_iter, tol, bar)
            final = history[-1]
            if best is None or final > best[0]:
                best = (final, params, history, converged)
        bar.close()
        final, params, history, converged = _best_restart(best, "EM over chunks", max_iter, tol)
        return Fit(
            model=model,
            data=None,
            method=self.name,
            params={k: v.detach() for k, v in params.items()},
            posterior=None,
            history=np.asarray(history, dtype=float),
            converged=converged,
            log_evidence=final,
            extras={
                "num_items": n_items,
                "chunk_size": data.chunk_size,
                "n_iter": len(history),
                "online": online,
                "fast_path": True,
            },
            seed=seed,
        )

    @staticmethod
    def _sweep(
        model: ChunkedEM, data: ChunkedData, bounds: list[tuple[int, int]], params: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], float]:
        """Statistics and log-likelihood summed over every chunk at ``params``."""
        summed: dict[str, Tensor] = {}
        ll = 0.0
        for start, stop in bounds:
            stats, chunk_ll = model.chunk_stats(data.rows(start, stop), params)
            ll += float(chunk_ll)
            for k, v in stats.items():
                summed[k] = summed[k] + v if k in summed else v.clone()
        return summed, ll

    def _batch(
        self,
        model: ChunkedEM,
        data: ChunkedData,
        bounds: list[tuple[int, int]],
        params: dict[str, Tensor],
        max_iter: int,
        tol: float,
        bar: Any,
    ) -> tuple[dict[str, Tensor], list[float], bool]:
        history: list[float] = []
        n = data.num_items
        for it in range(max_iter):
            stats, ll = self._sweep(model, data, bounds, params)
            _check_finite(ll, it)
            history.append(ll)
            bar.update(1)
            if not bar.disable:
                bar.set_postfix(loglik=f"{ll:.4g}")
            params = _m_step(model, stats, n, params)
            if it > 0 and abs(history[-1] - history[-2]) / n < tol:
                bar.update(max_iter - len(history))
                return params, history, True
        return params, history, False

    def _online(
        self,
        model: ChunkedEM,
        data: ChunkedData,
        bounds: list[tuple[int, int]],
        sample: Any,
        params: dict[str, Tensor],
        passes: int,
        step_exponent: float,
        step_offset: float,
        bar: Any,
    ) -> tuple[dict[str, Tensor], list[float]]:
        n = data.num_items
        warm, _ = model.chunk_stats(sample, params)
        factor = n / len(sample)
        running = {k: v * factor for k, v in warm.items()}
        params = _m_step(model, running, n, params)
        history: list[float] = []
        t = 0
        for p in range(passes):
            ll = 0.0
            for start, stop in bounds:
                t += 1
                g = (t + step_offset) ** (-step_exponent)
                stats, chunk_ll = model.chunk_stats(data.rows(start, stop), params)
                _check_finite(float(chunk_ll), p)
                ll += float(chunk_ll)
                scale = g * n / (stop - start)
                running = {k: (1.0 - g) * running[k] + scale * stats[k] for k in running}
                params = _m_step(model, running, n, params)
                bar.update(1)
            history.append(ll)
            if not bar.disable:
                bar.set_postfix(loglik=f"{ll:.4g}")
        return params, history


def _chunk_bounds(num_items: int, chunk_size: int) -> list[tuple[int, int]]:
    """Row ranges of the chunks; a last chunk under half a chunk joins the one before it."""
    starts = list(range(0, num_items, chunk_size))
    bounds = [(s, min(s + chunk_size, num_items)) for s in starts]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < chunk_size / 2:
        bounds[-2:] = [(bounds[-2][0], num_items)]
    return bounds


@contextlib.contextmanager
def _singular_covariance(model: GenerativeModel) -> Iterator[None]:
    """A covariance that stops being positive definite becomes a clear error naming the remedies."""
    try:
        yield
    except torch.linalg.LinAlgError as err:
        raise ValueError(
            f"{model.name}: a covariance became singular during EM ({str(err).splitlines()[0][:160]}); the data "
            "are degenerate for this model (repeated or constant items, a feature with no spread). Raise the "
            "covariance floor (GaussianMixture's reg_covar, HiddenMarkovModel's min_covar), use "
            "covariance_type='diag', or fit fewer components or states."
        ) from None


def _m_step(
    model: ChunkedEM, stats: dict[str, Tensor], num_items: int, previous: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The model's M-step from statistics, given the parameters they were computed at."""
    return model.m_step_from_stats(stats, num_items, previous=previous)


def _check_finite(ll: float, it: int) -> None:
    if not math.isfinite(ll):
        raise FloatingPointError(
            f"EM log-likelihood became {ll} at iteration {it}; "
            "the data or starting values make a component degenerate."
        )


def _best_restart(best: Any, what: str, max_iter: int, tol: float) -> Any:
    """The best restart ``(final, params, history, converged)``, warning when it did not converge."""
    assert best is not None
    if not best[3]:
        warnings.warn(
            f"{what} did not converge in max_iter={max_iter} iterations (tol={tol}); "
            "raise max_iter or tol, or try other starting values.",
            ConvergenceWarning,
            stacklevel=4,
        )
    return best


class _GenericEM:
    """EM on any Pyro model by enumeration and a gradient M-step (see module docstring)."""

    def __init__(self, model: GenerativeModel, data: Any, use_prior: bool, m_step_iters: int) -> None:
        self.model = model
        self.data = data
        self.use_prior = use_prior
        self.m_step_iters = m_step_iters
        self.n_candidates = 32
        self.roles = model.roles(data)
        with poutine.block(), torch.no_grad():
            self.prior_trace: Any = poutine.trace(model.model).get_trace(data)
        self.param_names = [n for n, s in self.prior_trace.nodes.items() if s["type"] == "param"]

    # ---------------------------------------------------------------- parametrisation
    def _transform(self, name: str) -> Any:
        return biject_to(self.prior_trace.nodes[name]["fn"].support)

    def init_params(self, init: Any) -> dict[str, Tensor]:
        names = self.roles.global_sites
        given = dict(init) if isinstance(init, Mapping) else {}
        unknown = set(given) - set(names) - set(self.param_names)
        if unknown:
            raise ValueError(
                f"init names unknown site(s) {sorted(unknown)}; global sites are {list(names)}"
                + (f", pyro.param sites {self.param_names}." if self.param_names else ".")
            )
        store = pyro.get_param_store()
        store.clear()  # a restart re-runs the model's own pyro.param initialisers (pg.fit scopes the store)
        with poutine.block(), torch.no_grad():
            poutine.trace(self.model.model).get_trace(self.data)
            for n in self.param_names:
                if n in given:
                    store[n] = torch.as_tensor(given.pop(n)).to(store[n].dtype)
        if isinstance(init, str) and init != "random":
            raise ValueError(
                f"init={init!r} is not a strategy this model offers; expected 'random' or a dict of values."
            )
        # Draws from the prior are poor starts on their own (a component far from every item
        # never recovers), so the best of several prior draws by log-likelihood is kept.
        with poutine.block(), torch.no_grad():
            traces: list[Any] = [
                poutine.trace(self.model.model).get_trace(self.data) for _ in range(self.n_candidates)
            ]
        for n, v in given.items():
            expected = traces[0].nodes[n]["value"].shape
            if torch.as_tensor(v).shape != expected:
                raise ValueError(
                    f"init[{n!r}] has shape {tuple(torch.as_tensor(v).shape)}; expected {tuple(expected)}."
                )
        candidates = {
            n: torch.stack(
                [torch.as_tensor(given[n]) if n in given else t.nodes[n]["value"] for t in traces]
            ).to(traces[0].nodes[n]["value"].dtype)
            for n in names
        }
        if len(given) < len(names) and self.n_candidates > 1:
            ll = pointwise_log_likelihood(self.model, self.data, candidates).sum(-1)
            best = int(torch.nan_to_num(ll, nan=-math.inf).argmax())
        else:
            best = 0
        return {**{n: v[best].detach() for n, v in candidates.items()}, **self._param_values()}

    def _param_values(self) -> dict[str, Tensor]:
        store = pyro.get_param_store()
        return {n: store[n].detach().clone() for n in self.param_names}

    # ------------------------------------------------------------------------ E-step
    def _factors(self, params: Mapping[str, Tensor]) -> EnumFactors:
        draws = {k: v.unsqueeze(0) for k, v in params.items() if k in self.roles.global_sites}
        return enum_factors(self.model, self.data, draws or None, vectorized=False)

    def e_step(self, params: Mapping[str, Tensor]) -> tuple[list[Tensor], float]:
        f = self._factors(params)
        tree, leaves = f.leaf_tree()
        with torch.enable_grad():
            total = f.contract(tree, pointwise=False).sum()
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
        weights = [
            torch.zeros_like(leaf) if g is None else g.detach() for g, leaf in zip(grads, leaves, strict=True)
        ]
        return weights, float(total.detach())

    # ------------------------------------------------------------------------ M-step
    def _q(self, params: Mapping[str, Tensor], weights: list[Tensor]) -> Tensor:
        f = self._factors(params)
        terms = [t for ts in f.tree.values() for t in ts]
        q = sum(((w * t).sum() for w, t in zip(weights, terms, strict=True)), torch.zeros(()))
        if self.use_prior:
            for name in self.roles.global_sites:
                q = q + self.prior_trace.nodes[name]["fn"].log_prob(params[name]).sum()
        return q

    def m_step(self, params: Mapping[str, Tensor], weights: list[Tensor]) -> dict[str, Tensor]:
        names = list(self.roles.global_sites)
        store = pyro.get_param_store()
        unconstrained = {
            n: self._transform(n).inv(params[n]).detach().clone().requires_grad_() for n in names
        }
        leaves = list(unconstrained.values()) + [store.get_param(n).unconstrained() for n in self.param_names]  # type: ignore[attr-defined]
        if not leaves:
            return dict(params)
        params = {n: params[n] for n in names}
        saved = [leaf.detach().clone() for leaf in leaves]

        def current() -> dict[str, Tensor]:
            return {n: self._transform(n)(u) for n, u in unconstrained.items()}

        with torch.no_grad():
            q_old = float(self._q(params, weights))

        def closure() -> Tensor:
            opt.zero_grad()
            loss = -self._q(current(), weights)
            loss.backward()
            return loss

        # L-BFGS from its full first step; a trial point that leaves the parameters' support (a
        # non-finite value the model's distributions refuse) restarts it from the previous values
        # with a tenth of the step, twice, before the M-step gives up
        for lr in (1.0, 0.1, 0.01):
            opt = torch.optim.LBFGS(
                leaves,
                lr=lr,
                max_iter=self.m_step_iters,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-14,
            )
            try:
                with torch.enable_grad():
                    opt.step(closure)
                break
            except ValueError:  # a distribution's argument validation refusing a non-finite value
                with torch.no_grad():
                    for leaf, old in zip(leaves, saved, strict=True):
                        leaf.copy_(old)
        else:
            raise FloatingPointError(
                f"the M-step of EM for {self.model.name} left the parameters' support at every step size "
                "tried; give starting values (init={...}), priors that keep the parameters finite, or use "
                "method='svi' or 'mcmc'."
            )
        with torch.no_grad():
            new = {n: v.detach() for n, v in current().items()}
            q_new = float(self._q(new, weights))
            if not (q_new >= q_old) or not math.isfinite(q_new):
                for leaf, old in zip(leaves, saved, strict=True):
                    leaf.copy_(old)
                return {**{n: v.detach() for n, v in params.items()}, **self._param_values()}
        return {**new, **self._param_values()}


register_backend("em", EM)
