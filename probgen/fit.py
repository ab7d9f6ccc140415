"""`probgen.fit`, the backend registry, and the `Fit` result every backend returns."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pyro
import torch
from torch import Tensor

from probgen.errors import ModelNotSupportedError
from probgen.model import GenerativeModel
from probgen.model import model as as_model
from probgen.state import isolated_rng, isolated_state

if TYPE_CHECKING:  # pragma: no cover
    import arviz
    import pandas as pd

__all__ = ["Backend", "Fit", "available_methods", "fit", "get_backend", "register_backend"]


@runtime_checkable
class Backend(Protocol):
    """An inference backend: ``fit(model, data, seed=..., progress=..., **options) -> Fit``.

    ``supports(model, data)`` returns ``None`` when the backend can fit the model, otherwise a
    sentence saying why not.
    """

    name: str

    def supports(self, model: GenerativeModel, data: Any) -> str | None: ...

    def fit(self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any) -> Fit: ...


_BACKENDS: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Register a backend under ``name`` so ``probgen.fit(..., method=name)`` finds it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty string; got {name!r}.")
    _BACKENDS[name] = factory


def _load_builtin_backends() -> None:
    if not {"em", "svi", "enum", "mcmc", "cd", "adversarial"} <= _BACKENDS.keys():
        import probgen.inference  # noqa: F401  (registers the built-in backends)


def available_methods() -> list[str]:
    """Names of every registered backend, sorted."""
    _load_builtin_backends()
    return sorted(_BACKENDS)


def get_backend(method: str | Backend) -> Backend:
    """The backend registered as ``method`` (or ``method`` itself when it is a backend)."""
    if not isinstance(method, str):
        if hasattr(method, "fit") and hasattr(method, "name"):
            return method
        raise TypeError(f"method must be a backend name or instance; got {type(method).__name__}.")
    _load_builtin_backends()
    if method not in _BACKENDS:
        raise ValueError(f"Unknown method {method!r}; expected one of: {', '.join(sorted(_BACKENDS))}.")
    return _BACKENDS[method]()


def capable_methods(model: GenerativeModel, data: Any) -> list[str]:
    """Registered backends that can fit ``model`` on ``data``."""
    _load_builtin_backends()
    return [name for name in sorted(_BACKENDS) if _BACKENDS[name]().supports(model, data) is None]


def fit(
    model: Any,
    data: Any,
    method: str | Backend = "svi",
    *,
    seed: int = 0,
    progress: bool | None = None,
    **options: Any,
) -> Fit:
    """Fit ``model`` to ``data`` with the backend named ``method``.

    Parameters
    ----------
    model : GenerativeModel or callable
        A probgen model, or a plain Pyro function ``fn(data=None)`` (wrapped by `probgen.model`).
    data : array-like
        Data items; numpy, torch and pandas are accepted (families accept more, e.g. lists of
        sequences).  Validated before any work starts.
    method : {"em", "svi", "enum", "mcmc", "cd", "adversarial"} or Backend, default "svi"
        Inference backend ("cd": contrastive divergence for energy-based models such as the RBM;
        "adversarial": generator against discriminator for implicit models such as the GAN).
    seed : int, default 0
        Seed for every random choice, so fits are reproducible.
    progress : bool, optional
        Show progress bars (tqdm).  Default: only on a terminal or in a notebook, so logs and
        CI output stay clean; ``True`` forces them, ``False`` hides them.
    **options
        Backend options, with the names users know (each backend's docstring has details):

        ========  =================================================================================
        "em"      ``max_iter`` (1000), ``tol`` (1e-6 nats per item; families set their own),
                  ``n_init`` (1), ``init`` (strategy name or dict of starting values), ``map``
                  (False), ``m_step_iters`` (20); with ``chunk_size``: ``online`` (False),
                  ``step_exponent`` (0.6), ``step_offset`` (1.0)
        "svi"     ``num_steps`` (3000), ``lr`` (0.01), ``optim`` ("adam", "clipped_adam" or a
                  ``pyro.optim`` instance), ``lr_decay`` (1.0), ``num_particles`` (1),
                  ``subsample_size`` (None), ``guide`` ("normal", "diagonal", "mvn", "delta" or a
                  callable), ``tol`` (1e-4), ``window`` (100), ``num_samples`` (1000), ``elbo``
                  (None: the model's own objective when it offers one, else Trace/TraceEnum;
                  "trace", "meanfield", "jit", "analytic")
        "mcmc"    ``num_samples`` (1000), ``warmup_steps`` (= num_samples), ``num_chains`` (2),
                  ``kernel`` ("nuts"/"hmc"/"chees"), ``target_accept_prob`` (0.8), ``max_tree_depth``
                  (10), ``step_size`` (1.0), ``num_steps`` (HMC), ``init`` ("auto", "uniform",
                  "median", "sample" or a dict), ``recover_discrete`` (False), ``chain_method``
                  ("sequential"), ``num_threads`` (None: torch's setting)
        "enum"    none, or with ``pyro.param`` sites ``max_iter`` (200), ``tol`` (1e-9)
        "cd"      ``num_steps`` (3000), ``lr`` (0.05), ``lr_decay`` (0.1), ``k`` (1), ``persistent``
                  (True), ``subsample_size`` (20), ``momentum`` (0.5), ``weight_decay`` (0),
                  ``init`` ("random"), ``tol`` (1e-2)
        ========  =================================================================================

        "adversarial": ``num_steps`` (3000), ``lr`` (1e-3), ``betas`` ((0.5, 0.999)),
        ``subsample_size`` (128), ``n_critic`` (1), ``gradient_penalty`` (1.0, R1 on real data).

    Scale options: ``num_items`` (streamed data: a ``DataLoader`` or re-iterable of minibatches,
    SVI only; the items in the whole data set, default the loader's sampler length),
    ``chunk_size`` (closed-form EM over an array or numpy memmap, chunk by chunk), ``device``
    (see the README).  Under an initialised ``torch.distributed`` process group, SVI treats each
    rank's data as its shard of the union.

    The fit leaves Pyro's param store, the random generators, torch's default dtype and thread
    count as it found them.

    Returns
    -------
    Fit

    Raises
    ------
    ValueError
        Unknown method, bad data (NaN, empty, wrong shape), or an impossible option.
    TypeError
        The backend cannot fit this model (the message lists those that can).
    """
    backend = get_backend(method)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}.")
    if progress is None:
        progress = interactive()
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool or None; got {type(progress).__name__}.")
    gm = as_model(model) if not isinstance(model, GenerativeModel) else model
    if not isinstance(gm, GenerativeModel):
        raise TypeError(f"model must be a probgen model or a Pyro function; got {type(model).__name__}.")
    from probgen.streaming import ChunkedData, StreamingData, is_stream_source

    num_items = options.pop("num_items", None)
    chunk_size = options.pop("chunk_size", None)
    device = _check_device(options.pop("device", None))
    prepared: Any
    if chunk_size is not None:
        if not getattr(backend, "accepts_chunks", False):
            raise ValueError(
                f"chunk_size= reads the data chunk by chunk for closed-form EM; method={backend.name!r} "
                "does not fit that way. Use method='em' (families with sufficient statistics), or for "
                "SVI pass a DataLoader of minibatches."
            )
        prepared = ChunkedData(data, chunk_size, gm.prepare_data)
        example = prepared.first
    elif num_items is not None or is_stream_source(data):
        if not getattr(backend, "accepts_streams", False):
            raise ValueError(
                f"data streamed in minibatches (a DataLoader or num_items=) need a backend that fits "
                f"from minibatches; method={backend.name!r} does not. Use method='svi', or for "
                "closed-form EM pass an array or numpy memmap with chunk_size=."
            )
        if num_items is None:
            try:  # the sampler's length: a DistributedSampler gives this rank's shard
                sampler = getattr(getattr(data, "batch_sampler", None), "sampler", None)
                num_items = len(sampler) if sampler is not None else len(data.dataset)
            except (AttributeError, TypeError):
                raise ValueError(
                    "num_items is needed: the number of items in the whole data set (the loader's "
                    "dataset has no len())."
                ) from None
        prepared = StreamingData(data, num_items, gm.prepare_data)
        example = prepared.first
    else:
        prepared = gm.prepare_data(data)
        example = prepared
    reason = backend.supports(gm, example)
    if reason is not None:
        capable = [m for m in capable_methods(gm, example) if m != backend.name]
        raise ModelNotSupportedError(
            f"method={backend.name!r} cannot fit {gm.name}: {reason}. "
            f"Methods that can: {', '.join(capable) if capable else 'none of the registered backends'}."
        )
    # On an accelerator, the data move there and tensors the fit creates default to it (CPU is
    # the default and needs nothing).
    target = device if device is not None and device.type != "cpu" else None
    if target is not None and isinstance(prepared, Tensor | tuple | list):
        prepared = _to_device(prepared, target)
        example = prepared
    with isolated_state(int(seed)), torch.device(target) if target is not None else _nothing():
        result = backend.fit(gm, prepared, seed=int(seed), progress=progress, **options)
        store = pyro.get_param_store()
        # the store is this fit's own (isolated_state): empty means no pyro.param site was used,
        # and a point fit then needs no trace of the model here (a fixed cost on small fits)
        if len(store.keys()) or result.posterior:
            roles = gm.roles(example)
            for name in roles.param_sites:  # pyro.param sites are part of the fit everywhere
                if name not in result.params and name in store:
                    result.params[name] = store[name].detach().clone()
            if result.posterior:
                _align(gm, example, result, roles)
    return result


def _check_device(device: Any) -> torch.device | None:
    """Validate ``device=`` at the boundary: a known device that this machine has."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: torch.cuda.is_available() is False on this machine; use 'cpu'.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={device!r}: probgen fits on 'cpu' or 'cuda' devices; got type {dev.type!r}."
        )
    return dev


def _to_device(data: Any, device: torch.device) -> Any:
    if isinstance(data, Tensor):
        return data.to(device)
    return type(data)(_to_device(d, device) for d in data)


@contextlib.contextmanager
def _nothing() -> Any:
    yield


def _align(gm: GenerativeModel, prepared: Any, result: Fit, roles: Any) -> None:
    """Relabel exchangeable components of the posterior draws (label switching)."""
    if result.posterior:
        aligned = gm.align_posterior(result.posterior, prepared, result.params)
        result.posterior.clear()
        result.posterior.update(aligned)
        for k in result.params:
            if k in aligned and k in roles.continuous_sites:
                result.params[k] = aligned[k].mean((0, 1))


def interactive() -> bool:
    """Whether progress bars would be seen: standard error is a terminal, or a notebook runs."""
    import sys

    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def _flat(draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in draws.items()}


@dataclass(frozen=True, eq=False)
class Fit:
    """What every backend returns: estimates, draws, history, and the shared tools.

    Attributes
    ----------
    model : GenerativeModel
        The fitted model.
    data : object
        The (prepared) training data.
    method : str
        Name of the backend that produced the fit.
    params : dict of str to Tensor
        Point estimates of the global sites (MLE/MAP; posterior mean for posterior fits).
    posterior : dict of str to Tensor or None
        Posterior draws with leading ``(chain, draw)`` dims; ``None`` for point fits.
    history : numpy.ndarray
        Objective per iteration: log-likelihood per EM iteration, loss per SVI step.
    converged : bool
        Whether the backend's convergence criterion was met.
    sample_stats : dict of str to numpy.ndarray, optional
        Per-draw sampler statistics ``(chain, draw)``: diverging, step_size, tree_depth, ...
    log_evidence : float, optional
        Exact log marginal likelihood (``"enum"``) or the final log-likelihood (``"em"``).
    extras : dict
        Backend-specific results (exact marginals, joint MAP assignment, discrete draws).
    """

    model: GenerativeModel
    data: Any
    method: str
    params: dict[str, Tensor]
    posterior: dict[str, Tensor] | None = None
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    converged: bool = True
    sample_stats: dict[str, np.ndarray] | None = None
    log_evidence: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    # ------------------------------------------------------------------ data handling
    def _data(self, data: Any) -> Any:
        if data is None:
            if self.data is None:
                raise ValueError("data is None and this fit carries no training data; pass data explicitly.")
            return self.data
        prepared = self.model.prepare_data(data)
        train = self.data
        if (
            isinstance(prepared, Tensor)
            and isinstance(train, Tensor)
            and prepared.dim() > 1
            and prepared.shape[1:] != train.shape[1:]
        ):
            raise ValueError(
                f"data has items of shape {tuple(prepared.shape[1:])}; {self.model.name} was fitted on "
                f"items of shape {tuple(train.shape[1:])} (e.g. {train.shape[-1]} features)."
            )
        return prepared

    @property
    def num_draws(self) -> int:
        """Total posterior draws (chains x draws), or 0 for a point fit."""
        if not self.posterior:
            return 0
        v = next(iter(self.posterior.values()))
        return int(v.shape[0] * v.shape[1])

    def _fixed(self) -> dict[str, Tensor]:
        """Values of the model's ``pyro.param`` sites (fixed in every draw)."""
        if self.data is None and not self.model.__dict__.get("_roles_cache"):
            return {}
        roles = self.model.roles(self.data) if self.data is not None else self.model._last_roles()
        return {k: v for k, v in self.params.items() if k in roles.param_sites}

    def _draws(self, max_draws: int | None = None) -> dict[str, Tensor]:
        """Flat draws ``(S, ...)`` of the sample sites; a point fit is one draw."""
        if self.posterior:
            flat = _flat(self.posterior)
            if max_draws is not None:
                flat = {k: v[:max_draws] for k, v in flat.items()}
            return flat
        fixed = self._fixed()
        return {k: v.unsqueeze(0) for k, v in self.params.items() if k not in fixed}

    def _draw_params(self, max_draws: int | None = None) -> list[dict[str, Tensor]]:
        """Full parameter sets (sample sites and ``pyro.param`` sites), one per draw."""
        draws = self._draws(max_draws)
        fixed = self._fixed()
        S = next(iter(draws.values())).shape[0] if draws else 1
        return [{**fixed, **{k: v[s] for k, v in draws.items()}} for s in range(S)]

    # --------------------------------------------------------------------- scoring
    def pointwise_log_likelihood(self, data: Any = None) -> Tensor:
        """Per-draw, per-item log-likelihood ``(chain, draw, item)``, discrete latents summed out."""
        from probgen.posterior import pointwise_log_likelihood_draws

        d = self._data(data)
        ll = pointwise_log_likelihood_draws(self.model, d, self._draws(), self._fixed())
        if self.posterior:
            v = next(iter(self.posterior.values()))
            return ll.reshape(v.shape[0], v.shape[1], -1)
        return ll.reshape(1, 1, -1)

    def log_prob(self, data: Any = None) -> Tensor:
        """Per-item marginal log-likelihood (anomaly scores, held-out evaluation).

        Point fits evaluate at :attr:`params`; posterior fits give the log posterior-predictive
        density ``log mean_s p(x_i | theta_s)``, never a plug-in of the posterior mean.  A discrete
        latent outside the data plate (a change point) is weighted by its posterior given the
        data being scored.
        """
        d = self._data(data)
        if not self.posterior:
            return self.model.log_prob_items(d, self.params)
        ll = self.pointwise_log_likelihood(d).reshape(self.num_draws, -1)
        return torch.logsumexp(ll, 0) - math.log(ll.shape[0])

    def score(self, data: Any = None) -> float:
        """Mean per-item log-likelihood (scikit-learn's ``score``)."""
        return float(self.log_prob(data).mean())

    def num_parameters(self, data: Any = None) -> int:
        """Free parameters counted by BIC/AIC (global sites and ``pyro.param`` sites)."""
        return int(self.model.num_parameters(self.params, self._data(data)))

    def log_likelihood(self, data: Any = None) -> float:
        """Total log-likelihood ``log p(data | params)`` at the point estimates (BIC's ``log L``)."""
        return float(self.model.log_evidence(self._data(data), self.params))

    def bic(self, data: Any = None) -> float:
        """Bayesian information criterion ``-2 log L + k log n`` at the point estimates."""
        d = self._data(data)
        return -2.0 * self.log_likelihood(d) + self.num_parameters(d) * math.log(
            self.model.num_observations(d)
        )

    def aic(self, data: Any = None) -> float:
        """Akaike information criterion ``-2 log L + 2 k`` at the point estimates."""
        d = self._data(data)
        return -2.0 * self.log_likelihood(d) + 2.0 * self.num_parameters(d)

    # --------------------------------------------------------------------- latents
    @staticmethod
    def _single(result: dict[str, Any]) -> Any:
        return next(iter(result.values())) if len(result) == 1 else result

    def _require_discrete(self, d: Any, what: str) -> None:
        has_own = self.model.offers("latent_map") or self.model.offers("latent_posterior")
        if not has_own and not self.model.roles(d).discrete_sites:
            raise ValueError(
                f"{what} needs a discrete latent site (a cluster, a state, a class); "
                f"{self.model.name} has none.  Use fit.sample or fit.posterior for continuous latents."
            )

    def _mean_latent_posterior(self, d: Any, max_draws: int) -> dict[str, Any]:
        """``mean_s p(z | x, theta_s)`` over (up to ``max_draws`` evenly spaced) posterior draws."""
        sets = self._draw_params()
        if len(sets) > max_draws:
            idx = torch.linspace(0, len(sets) - 1, max_draws).round().long().tolist()
            sets = [sets[i] for i in idx]
        total: dict[str, Any] = {}
        for p in sets:
            for k, v in self.model.latent_posterior(d, p).items():
                if k not in total:
                    total[k] = [t.clone() for t in v] if isinstance(v, list) else v.clone()
                elif isinstance(v, list):  # one tensor per sequence
                    total[k] = [a + b for a, b in zip(total[k], v, strict=True)]
                else:
                    total[k] = total[k] + v
        return {
            k: [t / len(sets) for t in v] if isinstance(v, list) else v / len(sets) for k, v in total.items()
        }

    def predict(self, data: Any = None, *, max_draws: int = 200) -> Any:
        """Most probable discrete latent per item (cluster, Viterbi path, class label).

        Point fits give the joint MAP at :attr:`params`; posterior fits the argmax of the
        posterior probabilities averaged over draws (:meth:`predict_proba`).  Returns the tensor
        itself when the model has one discrete site, else a dict by site.
        """
        d = self._data(data)
        self._require_discrete(d, "predict")
        if not self.posterior:
            return self._single(self.model.latent_map(d, self.params))
        mean = self._mean_latent_posterior(d, max_draws)
        return self._single(
            {k: [t.argmax(-1) for t in v] if isinstance(v, list) else v.argmax(-1) for k, v in mean.items()}
        )

    def predict_proba(self, data: Any = None, *, max_draws: int = 200) -> Any:
        """Posterior probabilities of the discrete latent(s), per item.

        Posterior fits average ``p(z | x, theta_s)`` over (up to ``max_draws``) draws.
        """
        d = self._data(data)
        self._require_discrete(d, "predict_proba")
        if not self.posterior:
            return self._single(self.model.latent_posterior(d, self.params))
        return self._single(self._mean_latent_posterior(d, max_draws))

    def marginals(self) -> dict[str, Tensor]:
        """Posterior probabilities of every discrete latent site on the training data.

        Exact for ``"enum"`` and for point fits (computed by enumeration at the estimates);
        averaged over draws for posterior fits.
        """
        if "marginals" in self.extras:
            return dict(self.extras["marginals"])
        d = self._data(None)
        self._require_discrete(d, "marginals")
        if not self.posterior:
            return self.model.latent_posterior(d, self.params)
        return self._mean_latent_posterior(d, 200)

    # ----------------------------------------------------------------- generation
    def sample(
        self,
        n: int,
        length: int | None = None,
        *,
        return_latents: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Draw ``n`` new data items from the fitted model.

        Point fits generate at :attr:`params`; posterior fits draw parameters from the
        posterior, then data (each item's parameters are a posterior draw chosen at random).

        Parameters
        ----------
        n : int
            Number of items (sequences for sequence models).
        length : int, optional
            Length of each generated sequence (sequence models such as HMMs only).
        return_latents : bool, default False
            Also return the discrete latents of each draw (e.g. the component).
        seed : int, optional
            Seed for this draw (default: drawn from torch's global generator, so successive
            calls give new items).  The global random state is otherwise left untouched.
        **kwargs
            Other family options.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive int; got {n!r}.")
        if length is not None:
            kwargs["length"] = length
        if seed is None:  # successive calls differ; a script seeded once stays reproducible
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        gen = torch.Generator().manual_seed(int(seed))
        with isolated_rng(int(seed)):
            if not self.posterior:
                out = self.model.sample_items(int(n), self.params, generator=gen, **kwargs)
            else:
                out = self._sample_posterior(int(n), gen, kwargs)
        if return_latents:
            return out["data"], {k: v for k, v in out.items() if k != "data"}
        return out["data"]

    def _sample_posterior(self, n: int, gen: torch.Generator, kwargs: dict[str, Any]) -> dict[str, Any]:
        sets = self._draw_params()
        which = torch.randint(len(sets), (n,), generator=gen)
        used, counts = torch.unique(which, return_counts=True)
        parts = [
            self.model.sample_items(int(c), {**self.params, **sets[int(i)]}, generator=gen, **kwargs)
            for i, c in zip(used.tolist(), counts.tolist(), strict=True)
        ]
        out: dict[str, Any] = {}
        for key in parts[0]:
            values = [p[key] for p in parts]
            if isinstance(values[0], Tensor):
                out[key] = torch.cat(values, 0)
            else:
                out[key] = [v for vs in values for v in vs]
        return out

    def posterior_predictive(self, num_samples: int | None = None, data: Any = None) -> dict[str, Tensor]:
        """Replicates of the observed sites, one per posterior draw ``(chain, draw, ...)``."""
        from probgen.posterior import posterior_predictive

        draws = self._draws()
        S = next(iter(draws.values())).shape[0]
        if num_samples is not None:
            idx = torch.linspace(0, S - 1, min(num_samples, S)).round().long()
            draws = {k: v[idx] for k, v in draws.items()}
        reps = posterior_predictive(self.model, self._data(data), draws, self._fixed(), seed=self.seed)
        if self.posterior and num_samples is None:
            v = next(iter(self.posterior.values()))
            return {k: r.reshape((v.shape[0], v.shape[1]) + tuple(r.shape[1:])) for k, r in reps.items()}
        return {k: r.unsqueeze(0) for k, r in reps.items()}

    # ------------------------------------------------------------------- ArviZ, I/O
    def to_arviz(
        self, *, posterior_predictive: bool = False, num_ppc_samples: int | None = None
    ) -> arviz.InferenceData:
        """ArviZ ``InferenceData``: posterior, pointwise log_likelihood, sample_stats, observed_data.

        Point fits convert as one chain of one draw.  ``posterior_predictive=True`` adds that group.
        """
        from probgen.arviz_bridge import to_inference_data

        return to_inference_data(
            self, posterior_predictive=posterior_predictive, num_ppc_samples=num_ppc_samples
        )

    def plot(self, data: Any = None, *, ax: Any = None, **kwargs: Any) -> Any:
        """Picture of the fitted model over ``data`` (default: the training data).

        Families draw what suits them (mixture ellipses over the data, HMM state strips with
        posterior probabilities); returns the matplotlib axes.  ArviZ's plots work on
        :meth:`to_arviz` for every fit.
        """
        return self.model.plot_fit(self._data(data), self.params, ax=ax, **kwargs)

    def summary(self) -> pd.DataFrame:
        """Same as ``probgen.summary(fit)``."""
        from probgen.diagnostics import summary

        return summary(self)

    def save(self, path: Any) -> None:
        """Save to ``path`` (a ``.npz`` of tensors plus JSON metadata; no pickle)."""
        from probgen.persistence import save

        save(self, path)

    def __getattr__(self, name: str) -> Any:
        """Family helpers: ``fit.<name>(...)`` calls ``model.<name>(fit, ...)`` for every name in
        the model's ``fit_helpers`` (``fit.encode`` for VAEs, ``fit.query`` for networks, ...)."""
        model = self.__dict__.get("model")
        helpers: tuple[str, ...] = tuple(getattr(model, "fit_helpers", ())) if model is not None else ()
        if name in helpers and not name.startswith("_"):
            return functools.partial(getattr(model, name), self)
        offered = f"; {model.name} adds: {', '.join(helpers)}" if helpers and model is not None else ""
        raise AttributeError(f"'Fit' object has no attribute {name!r}{offered}")

    def __dir__(self) -> list[str]:
        model = self.__dict__.get("model")
        return sorted(set(super().__dir__()) | set(getattr(model, "fit_helpers", ())))

    def __repr__(self) -> str:
        kind = f"{self.num_draws} draws" if self.posterior else "point estimates"
        return f"Fit(model={self.model!r}, method={self.method!r}, {kind}, converged={self.converged})"
