"""The result every backend returns (:class:`FitResult`) and the tools shared by every fit.

:class:`probgen.Fit` adds ArviZ, saving, summaries and pictures on top of it (``probgen.fit``); the
modules those use (``arviz_bridge``, ``diagnostics``, ``persistence``) stand on this one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probgen._result_data import describe_items, proba_frame, same_data
from probgen.arguments import ModelArgs, like_input
from probgen.capabilities import Imputes, ImputesLike, ImputesOverDraws, MissingValues, PreparesLike
from probgen.marginal import marginal_log_likelihood
from probgen.model import GenerativeModel, _FunctionModel, scores_local_latents_generically
from probgen.posterior import (
    discrete_marginals,
    pointwise_log_likelihood_draws,
    posterior_predictive,
    total_log_likelihood,
)
from probgen.roles import last_memo
from probgen.state import isolated_rng, serialised
from probgen.validation import check_seed, positive_int

__all__ = ["FitResult", "FrozenDict", "frozen"]


_IMPUTE_METHODS = ("mean", "sample")


class FrozenDict(dict[str, Any]):
    """A dict that refuses to change: a fit's ``params``, ``posterior``, ``extras`` and
    ``sample_stats``.  Unlike a mapping proxy it copies, pickles and compares as a dict."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a fit is immutable: copy the mapping first, e.g. dict(fit.params).")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


def frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A read-only copy of ``d`` (``None`` stays ``None``)."""
    return None if d is None else FrozenDict(d)


def _flat(draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in draws.items()}


@dataclass(frozen=True, eq=False)
class FitResult:
    """What every backend returns: estimates, draws, history, and the shared tools.

    Immutable: the dicts are read-only copies of the backend's (copy with ``dict(fit.params)``).

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
    params: Mapping[str, Tensor]
    posterior: Mapping[str, Tensor] | None = None
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    converged: bool = True
    sample_stats: Mapping[str, np.ndarray] | None = None
    log_evidence: float | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("params", "posterior", "sample_stats", "extras"):
            object.__setattr__(self, name, frozen(getattr(self, name)))
        # a copy, not a read-only view: torch.as_tensor(fit.history) warns on read-only arrays
        object.__setattr__(self, "history", np.array(self.history, copy=True))

    # ------------------------------------------------------------------ data handling
    def _data(self, data: Any) -> Any:
        if data is None:
            if self.data is None:
                raise ValueError("data is None and this fit carries no training data; pass data explicitly.")
            return self.data
        train = self.data
        model = self.model
        if (
            isinstance(model, _FunctionModel)
            and isinstance(train, Tensor)
            and isinstance(data, (np.ndarray, Tensor, pd.DataFrame))
        ):
            # before preparing: preparing traces a user's model, whose shape error knows no fit
            shape = tuple(data.shape)
            if len(shape) > 1 and shape[1:] != tuple(train.shape[1:]):
                raise ValueError(
                    f"data has items of shape {shape[1:]}; {self.model.name} was fitted on "
                    f"{describe_items(train)}."
                )
        if self.extras.get("missing") == "marginalize" and isinstance(model, MissingValues):
            prepared = model.prepare_missing(data)
        elif isinstance(model, PreparesLike) and train is not None:
            prepared = model.prepare_like(data, train)
        else:
            prepared = model.prepare_data(data)
        if (
            isinstance(prepared, Tensor)
            and isinstance(train, Tensor)
            and prepared.dim() > 1
            and prepared.shape[1:] != train.shape[1:]
        ):
            raise ValueError(
                f"data has items of shape {tuple(prepared.shape[1:])}; {self.model.name} was fitted on "
                f"{describe_items(train)}."
            )
        if isinstance(prepared, ModelArgs) and isinstance(train, ModelArgs):
            for k in set(prepared.per_item) & set(train.per_item):
                new, old = prepared.values[k].shape[1:], train.values[k].shape[1:]
                if new != old:
                    raise ValueError(
                        f"data[{k!r}] has items of shape {tuple(new)}; {self.model.name} was fitted on "
                        f"items of shape {tuple(old)}."
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
        roles = self.model.roles(self.data) if self.data is not None else last_memo(self.model, "roles")
        if roles is None:
            return {}
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
        return self._pointwise(self._data(data))

    # The private scoring methods take data already prepared: data are prepared once per public call.
    def _pointwise(self, d: Any) -> Tensor:
        ll = pointwise_log_likelihood_draws(self.model, d, self._draws(), self._fixed())
        if self.posterior:
            v = next(iter(self.posterior.values()))
            return ll.reshape(v.shape[0], v.shape[1], -1)
        return ll.reshape(1, 1, -1)

    def log_prob(
        self,
        data: Any = None,
        *,
        local: str = "marginal",
        num_particles: int = 256,
        return_se: bool = False,
    ) -> Any:
        """Per-item marginal log-likelihood (anomaly scores, held-out evaluation).

        Point fits evaluate at :attr:`params`; posterior fits give the log posterior-predictive
        density ``log mean_s p(x_i | theta_s)``, never a plug-in of the posterior mean.  A discrete
        latent outside the data plate (a change point) is weighted by its posterior given the
        data being scored.

        A model with continuous latents inside its data plate (``z_i`` of a VAE or probabilistic
        PCA) has two per-item scores, chosen by ``local``:

        ``"marginal"`` (default)
            ``log p(x_i | theta)`` with ``z_i`` integrated out by importance sampling
            (:mod:`probgen.marginal`): ``num_particles`` particles per item from the model's own
            guide when it amortises ``z_i`` (an encoder), else from the prior; seeded by the
            fit's seed, so scores repeat.  Defined for any items, comparable across models.
        ``"conditional"``
            ``log mean_s p(x_i | z_is, theta_s)`` at the posterior draws of ``z_i``: the training
            items only (their latents were fitted), what ArviZ's LOO reads.  It is not a
            likelihood of the items alone and runs above the marginal.

        ``return_se=True`` returns ``(scores, standard_errors)``: the Monte Carlo standard error
        of each marginal score (zeros where the score is exact).
        """
        if local not in ("marginal", "conditional"):
            raise ValueError(f"local must be 'marginal' or 'conditional'; got {local!r}.")
        positive_int(num_particles, "num_particles")
        d = self._data(data)
        roles = self.model.roles(d)
        if roles.local_sites and scores_local_latents_generically(self.model):
            if local == "marginal":
                scores = marginal_log_likelihood(
                    self.model,
                    d,
                    self._draws(),
                    self._fixed(),
                    num_particles=num_particles,
                    seed=self.seed,
                    guide_params=self.extras.get("guide_params"),
                )
                lp = scores.log_prob.to(self._score_dtype(d))
                return (lp, scores.se.to(lp.dtype)) if return_se else lp
            if data is not None and not same_data(d, self.data):
                raise ValueError(
                    "local='conditional' scores the training items at their fitted latents "
                    f"{list(roles.local_sites)}; new items have none: use local='marginal'."
                )
        if not self.posterior:
            lp = self.model.log_prob_items(d, self.params)
        else:
            ll = self._pointwise(d).reshape(self.num_draws, -1)
            lp = torch.logsumexp(ll, 0) - math.log(ll.shape[0])
        return (lp, torch.zeros_like(lp)) if return_se else lp

    def _total_log_likelihood(self, d: Any) -> float:
        """``log p(data | params)`` at the point estimates; per-item continuous latents integrated
        out by importance sampling (:mod:`probgen.marginal`)."""
        if self.model.roles(d).local_sites and scores_local_latents_generically(self.model):
            roles = self.model.roles(d)
            point = {k: v.unsqueeze(0) for k, v in self.params.items() if k in roles.global_sites}
            scores = marginal_log_likelihood(
                self.model,
                d,
                point,
                self._fixed(),
                seed=self.seed,
                guide_params=self.extras.get("guide_params"),
            )
            return float(scores.log_prob.sum())
        return total_log_likelihood(self.model, d, self.params)

    def _score_dtype(self, d: Any) -> torch.dtype:
        roles = self.model.roles(d)
        return roles.model_dtype or torch.get_default_dtype()

    def score(self, data: Any = None) -> float:
        """Mean per-item log-likelihood (scikit-learn's ``score``)."""
        return float(self.log_prob(data).mean())

    def num_parameters(self, data: Any = None) -> int:
        """Free parameters counted by BIC/AIC (global sites and ``pyro.param`` sites)."""
        return int(self.model.num_parameters(self.params, self._data(data)))

    def log_likelihood(self, data: Any = None) -> float:
        """Total log-likelihood ``log p(data | params)`` at the point estimates (BIC's ``log L``)."""
        return self._total_log_likelihood(self._data(data))

    def bic(self, data: Any = None) -> float:
        """Bayesian information criterion ``-2 log L + k log n`` at the point estimates."""
        d = self._data(data)
        k = int(self.model.num_parameters(self.params, d))
        return -2.0 * self._total_log_likelihood(d) + k * math.log(self.model.num_observations(d))

    def aic(self, data: Any = None) -> float:
        """Akaike information criterion ``-2 log L + 2 k`` at the point estimates."""
        d = self._data(data)
        k = int(self.model.num_parameters(self.params, d))
        return -2.0 * self._total_log_likelihood(d) + 2.0 * k

    # --------------------------------------------------------------------- latents
    @staticmethod
    def _single(result: dict[str, Any]) -> Any:
        return next(iter(result.values())) if len(result) == 1 else result

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
        if not self.posterior:
            return self._single(self.model.latent_map(d, self.params))
        mean = self._mean_latent_posterior(d, max_draws)
        return self._single(
            {k: [t.argmax(-1) for t in v] if isinstance(v, list) else v.argmax(-1) for k, v in mean.items()}
        )

    def predict_proba(
        self, data: Any = None, *, max_draws: int = 200, filtering: bool = False, as_frame: bool = False
    ) -> Any:
        """Posterior probabilities of the discrete latent(s), per item.

        Posterior fits average ``p(z | x, theta_s)`` over (up to ``max_draws``) draws.  For a
        chain written step by step (a ``pyro.markov`` loop) these are the smoothing marginals
        ``p(x_t | y_1..T)``; ``filtering=True`` gives the filtering ones ``p(x_t | y_1..t)``
        (each state given the steps traced up to it; models scored by Pyro's enumeration).

        Parameters
        ----------
        data : array-like, optional
            Items to label (default: the training data).
        max_draws : int, default 200
            Posterior draws averaged over (evenly spaced), for posterior fits.
        filtering : bool, default False
            Filtering rather than smoothing marginals of a chain written step by step.
        as_frame : bool, default False
            Return a ``pandas.DataFrame`` per latent site: one column per component or state
            (labelled ``0 .. K-1``, the columns named after the site), one row per item, indexed
            by ``data``'s index when ``data`` is a DataFrame.  A list of sequences gives one
            frame whose index is (sequence, position), each sequence's own index when it is
            a DataFrame.

        Returns
        -------
        Tensor, list of Tensor, pandas.DataFrame or dict
            ``(n, K)`` probabilities (one tensor per sequence for sequence models); a dict by
            site when the model has several discrete sites.

        Raises
        ------
        TypeError
            If ``as_frame`` is not a bool.
        ValueError
            If ``filtering=True`` for a model that computes its own marginals, or ``as_frame=True``
            for probabilities that are not one row per item.
        """
        if not isinstance(as_frame, bool):
            raise TypeError(f"as_frame must be a bool; got {type(as_frame).__name__}.")
        probs = self._latent_probabilities(self._data(data), max_draws, filtering)
        if as_frame:
            frames = {k: proba_frame(v, k, data) for k, v in probs.items()}
            return self._single(frames)
        return self._single(probs)

    def _latent_probabilities(self, d: Any, max_draws: int, filtering: bool) -> dict[str, Any]:
        """:meth:`predict_proba`'s probabilities by site, on prepared data ``d``."""
        if filtering:
            if type(self.model).latent_posterior is not GenerativeModel.latent_posterior:
                raise ValueError(
                    f"filtering=True applies to models scored by Pyro's enumeration; {self.model.name} "
                    "computes its own posterior marginals."
                )
            sets = self._draw_params()
            if len(sets) > max_draws:
                idx = torch.linspace(0, len(sets) - 1, max_draws).round().long().tolist()
                sets = [sets[i] for i in idx]
            parts = [discrete_marginals(self.model, d, p, filtering=True) for p in sets]
            return {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
        if not self.posterior:
            return dict(self.model.latent_posterior(d, self.params))
        return self._mean_latent_posterior(d, max_draws)

    def marginals(self) -> dict[str, Tensor]:
        """Posterior probabilities of every discrete latent site on the training data.

        Exact for ``"enum"`` and for point fits (computed by enumeration at the estimates);
        averaged over draws for posterior fits.
        """
        if "marginals" in self.extras:
            return dict(self.extras["marginals"])
        d = self._data(None)
        if not self.posterior:
            return self.model.latent_posterior(d, self.params)
        return self._mean_latent_posterior(d, 200)

    # ------------------------------------------------------------------ imputation
    def impute(
        self,
        data: Any = None,
        *,
        method: str = "mean",
        num_samples: int = 1,
        seed: int | None = None,
        max_draws: int = 200,
    ) -> Any:
        """Fill the missing cells (NaN) of ``data`` given each item's observed cells.

        Works whether or not the fit was made with ``missing="marginalize"``: a model fitted on
        complete data imputes new items too.  Point fits impute at :attr:`params`; posterior fits
        average the conditional means over (up to ``max_draws``) draws, or draw each copy's
        parameters from the posterior.

        Parameters
        ----------
        data : array-like, optional
            Items with NaN where a cell is missing (default: the training data).
        method : {"mean", "sample"}, default "mean"
            ``"mean"``: the conditional mean of each missing cell given the observed cells of its
            item (for a mixture, the components' conditional means weighted by the component
            probabilities given the observed cells; categorical codes take their most probable
            category); ``"sample"``: draws from the conditional distribution.
        num_samples : int, default 1
            Completed copies drawn (``method="sample"`` only).
        seed : int, optional
            Seed of ``"sample"`` (default: fresh draws each call).
        max_draws : int, default 200
            Posterior draws averaged over by ``"mean"`` (posterior fits).

        Returns
        -------
        numpy.ndarray, pandas.DataFrame, Tensor, or a list of them
            ``data`` of the type and shape given (a DataFrame keeps its index and columns; a
            list is returned as a numpy array), observed cells unchanged; with
            ``num_samples > 1`` a list of ``num_samples`` completed copies.

        Raises
        ------
        TypeError
            The model cannot impute (it lacks the capability ``Imputes``).
        ValueError
            Unknown ``method``, ``num_samples > 1`` with ``"mean"``, or bad data.

        Examples
        --------
        >>> import numpy as np, probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> x = np.random.default_rng(0).normal(size=(200, 2)) @ [[1.0, 0.9], [0.0, 0.4]]
        >>> x[:5, 1] = np.nan
        >>> fit = pg.fit(GaussianMixture(1), x, method="em", missing="marginalize", progress=False)
        >>> filled = fit.impute(x)
        >>> bool(np.isnan(filled).any()), filled.shape
        (False, (200, 2))
        """
        if method not in _IMPUTE_METHODS:
            raise ValueError(
                f"method must be one of {', '.join(repr(m) for m in _IMPUTE_METHODS)}; got {method!r}."
            )
        positive_int(num_samples, "num_samples")
        if method == "mean" and num_samples != 1:
            raise ValueError(
                f"num_samples={num_samples} applies to method='sample'; method='mean' gives one copy."
            )
        check_seed(seed, allow_none=True)
        positive_int(max_draws, "max_draws")
        model = self.model
        if not isinstance(model, Imputes):
            raise TypeError(
                f"{model.name} cannot impute missing cells: it does not offer the capability Imputes "
                "(impute_items)."
            )
        if data is None:
            d = self._data(None)
        elif isinstance(model, MissingValues):
            d = model.prepare_missing(data)
        else:
            d = self._data(data)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        gen = torch.Generator().manual_seed(int(seed))
        sets = self._draw_params() if self.posterior else [dict(self.params)]
        if method == "mean":
            if len(sets) > max_draws:
                idx = torch.linspace(0, len(sets) - 1, max_draws).round().long().tolist()
                sets = [sets[i] for i in idx]
            if (
                isinstance(model, ImputesOverDraws) and len(sets) > 1
            ):  # states: not a mean of per-draw answers
                filled = [model.impute_over_draws(d, [{**self.params, **p} for p in sets])]
            else:
                means = torch.stack([model.impute_items(d, {**self.params, **p})[0] for p in sets])
                # cells every draw gives alike (the observed ones) keep their value to the bit
                filled = [torch.where((means == means[0]).all(0), means[0], means.mean(0))]
        else:
            which = torch.randint(len(sets), (int(num_samples),), generator=gen).tolist()
            filled = [
                model.impute_items(d, {**self.params, **sets[i]}, method="sample", generator=gen)[0]
                for i in which
            ]
        if isinstance(model, ImputesLike):  # items that are not rows (sequences, model arguments)
            copies = [model.imputed_like(data, d, f) for f in filled]
        else:
            copies = [like_input(data, f) for f in filled]
        return copies[0] if num_samples == 1 else copies

    # ----------------------------------------------------------------- generation
    def sample(
        self,
        n: int,
        length: int | None = None,
        *,
        return_latents: bool = False,
        seed: int | None = None,
        data: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Draw ``n`` new data items from the fitted model.

        A model of several arguments (``model(x, y=None)``) generates its response at given
        inputs: ``fit.sample(n, data={"x": X_new})`` returns ``n`` simulated responses at
        ``X_new``, shaped ``(n, *y_shape)``, each from a random posterior draw (the point
        estimates for point fits) with fresh per-item latents.

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
        positive_int(n, "n")
        check_seed(seed, allow_none=True)
        if isinstance(self.data, ModelArgs) or data is not None:
            return self._sample_at(int(n), data, seed, return_latents)
        if length is not None:
            kwargs["length"] = length
        if seed is None:  # successive calls differ; a script seeded once stays reproducible
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        gen = torch.Generator().manual_seed(int(seed))
        with isolated_rng(int(seed)):
            if not self.posterior:
                out = self._sample_items(int(n), self.params, gen, kwargs)
            else:
                out = self._sample_posterior(int(n), gen, kwargs)
        if return_latents:
            return out["data"], {k: v for k, v in out.items() if k != "data"}
        return out["data"]

    def _sample_at(self, n: int, data: Any, seed: int | None, return_latents: bool) -> Any:
        """``n`` responses at the inputs ``data`` (a model of several arguments)."""
        if data is None:
            names = ", ".join(self.data.values) if isinstance(self.data, ModelArgs) else "data"
            raise ValueError(
                f"{self.model.name} takes its inputs as arguments ({names}): pass them, leaving the response "
                "out, e.g. fit.sample(n, data={'x': X_new})."
            )
        if return_latents:
            raise ValueError(
                "return_latents applies to models generated from model(None); at given inputs "
                "use fit.posterior_predictive(data=...) for the responses."
            )
        d = self._data(data)
        if not isinstance(d, ModelArgs):
            raise ValueError(
                f"data must be the model's arguments (a mapping or a tuple); got {type(data).__name__}."
            )
        draws = self._draws()
        S = next(iter(draws.values())).shape[0] if draws else 1
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        gen = torch.Generator().manual_seed(int(seed))
        which = torch.randint(S, (n,), generator=gen)
        trained = self.model.roles(self.data) if isinstance(self.data, ModelArgs) else None
        reps = posterior_predictive(
            self.model,
            d,
            {k: v[which] for k, v in draws.items()},
            self._fixed(),
            seed=int(seed),
            sites=trained.observed_sites if trained is not None else None,
            keep_local=False,
        )
        return self._single(reps)

    def _sample_items(
        self, n: int, params: Mapping[str, Tensor], gen: torch.Generator, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        model = self.model
        if isinstance(model, PreparesLike) and self.data is not None:
            return model.sample_like(n, params, self.data, generator=gen, **kwargs)
        return model.sample_items(n, params, generator=gen, **kwargs)

    def _sample_posterior(self, n: int, gen: torch.Generator, kwargs: dict[str, Any]) -> dict[str, Any]:
        sets = self._draw_params()
        which = torch.randint(len(sets), (n,), generator=gen)
        used, counts = torch.unique(which, return_counts=True)
        parts = [
            self._sample_items(int(c), {**self.params, **sets[int(i)]}, gen, kwargs)
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
        """Replicates of the observed sites, one per posterior draw ``(chain, draw, ...)``.

        ``data`` (default: the training data) may leave the response out: for a model of several
        arguments, ``fit.posterior_predictive(data={"x": X_new})`` draws ``y`` at new inputs, the
        global parameters at each posterior draw and the per-item latents from their prior.
        """
        draws = self._draws()
        S = next(iter(draws.values())).shape[0]
        if num_samples is not None:
            idx = torch.linspace(0, S - 1, min(num_samples, S)).round().long()
            draws = {k: v[idx] for k, v in draws.items()}
        d = self._data(data)
        trained = self.model.roles(self.data) if self.data is not None else None
        reps = posterior_predictive(
            self.model,
            d,
            draws,
            self._fixed(),
            seed=self.seed,
            sites=trained.observed_sites if trained is not None and data is not None else None,
            keep_local=data is None,
        )
        if self.posterior and num_samples is None:
            v = next(iter(self.posterior.values()))
            return {k: r.reshape((v.shape[0], v.shape[1]) + tuple(r.shape[1:])) for k, r in reps.items()}
        return {k: r.unsqueeze(0) for k, r in reps.items()}

    def __repr__(self) -> str:
        kind = f"{self.num_draws} draws" if self.posterior else "point estimates"
        return f"{type(self).__name__}(model={self.model!r}, method={self.method!r}, {kind}, converged={self.converged})"


# Every tool that runs the model goes through Pyro's process-wide handler stack: from several
# threads they take turns (probgen.state.PYRO_LOCK), as fits do.
for _name in (
    "pointwise_log_likelihood",
    "log_prob",
    "num_parameters",
    "log_likelihood",
    "bic",
    "aic",
    "predict",
    "predict_proba",
    "impute",
    "marginals",
    "sample",
    "posterior_predictive",
):
    setattr(FitResult, _name, serialised(getattr(FitResult, _name)))
