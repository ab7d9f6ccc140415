"""Chain starting points that are checked before any chain runs, and chains that fail alone.

Every chain of ``method="mcmc"`` starts at a point whose potential energy (minus the log joint
density in the unconstrained space) and gradient are finite.  Pyro's ``initialize_model`` draws
up to 100 candidates from the init strategy, but it traces the model with the distributions'
argument checks on, so one candidate that makes a parameter invalid (a ``Normal`` whose scale is
NaN because a latent left its support) raises at once instead of being redrawn.  Here the
candidates are drawn with those checks off, each one accepted only when its potential and
gradient are finite and Pyro's checks pass at it; a chain tries :data:`_MAX_ROUNDS` rounds of
candidates before giving up with an error that names the sites whose log density is not finite.

Starting values given by the user (``init={...}``, which every round repeats) that fail are
replaced by Pyro's uniform draws for that chain, with a :class:`StartWarning`.  A chain that
raises while it samples (Pyro's kernels run the model with its checks on) is dropped from the fit
with a :class:`StartWarning` naming it, and the other chains' draws are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import InitMessenger, init_to_uniform
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad
from torch.distributions import biject_to

from probgen.state import seed_everything

__all__ = [
    "ChainFailure",
    "ChainStart",
    "GivenValues",
    "StartWarning",
    "find_start",
    "find_starts",
    "nearby",
    "run_chains_apart",
]

_State = dict[str, torch.Tensor]
_T = TypeVar("_T")
#: Rounds of Pyro's candidate search (100 candidates each) before a chain gives up.
_MAX_ROUNDS = 3
#: Chains after the first start this far (uniformly, in the unconstrained space) from a given
#: starting point, as PyMC's "jitter+adapt_diag".
INIT_JITTER = 1.0
#: Errors a model raises when a value leaves its support or a parameter becomes invalid.
_MODEL_ERRORS = (ValueError, RuntimeError, ZeroDivisionError)


class StartWarning(UserWarning):
    """A chain's starting values were replaced, or a chain failed and was left out of the fit."""


class InitShapeError(ValueError):
    """Per-chain starting values that do not cover every chain."""


class ChainFailure(ValueError):
    """No starting point of finite log density was found for a chain."""


@dataclass
class ChainStart:
    """One chain's unconstrained starting point, Pyro's one-state potential and the transforms.

    ``redraws`` counts the candidates rejected before ``z`` (0 when the first was finite);
    ``note`` says why the given starting values were replaced, else None.
    """

    z: _State
    potential_fn: Callable[[_State], torch.Tensor]
    transforms: dict[str, Any]
    redraws: int = 0
    note: str | None = None


class GivenValues:
    """Pyro init strategy: the given values where named, a uniform draw elsewhere.

    A value with one more leading dim than its site holds one starting value per chain, of which
    chain ``chain``'s is taken (``per_chain`` is then True: such a start is never jittered).
    """

    def __init__(self, values: Mapping[str, torch.Tensor], chain: int) -> None:
        self.values = values
        self.chain = chain
        self.per_chain = False

    def __call__(self, site: Any) -> torch.Tensor:
        fallback = init_to_uniform(site)
        if site["name"] not in self.values:
            return fallback
        value = self.values[site["name"]]
        if value.dim() == fallback.dim() + 1:
            if value.shape[0] <= self.chain:
                raise InitShapeError(
                    f"init[{site['name']!r}] has starting values for {value.shape[0]} chain(s); "
                    f"chain {self.chain} has none."
                )
            value = value[self.chain]
            self.per_chain = True
        return value.to(fallback.dtype).expand(fallback.shape)


def _is_finite(potential_fn: Callable[[_State], torch.Tensor], z: _State) -> bool:
    """Whether the potential and its gradient are finite at ``z`` with Pyro's checks on."""
    try:
        with pyro.validation_enabled(True):
            grads, pe = potential_grad(potential_fn, z)
    except _MODEL_ERRORS:
        return False
    return bool(torch.isfinite(pe)) and all(bool(torch.isfinite(g).all()) for g in grads.values())


def _jitter(z: _State, potential_fn: Callable[[_State], torch.Tensor], scale: float) -> _State:
    """``z`` moved uniformly by up to ``scale`` per coordinate, to a point of finite energy."""
    for _ in range(10):
        moved = {k: v + scale * (2.0 * torch.rand_like(v) - 1.0) for k, v in z.items()}
        if _is_finite(potential_fn, moved):
            return {k: v.detach() for k, v in moved.items()}
        scale /= 2.0
    return z


def _counting(strategy: Callable[[Any], torch.Tensor], calls: list[int]) -> Callable[[Any], torch.Tensor]:
    """``strategy``, counting its calls; where it cannot draw (Pyro's strategies sample the site's
    distribution first, which fails when an earlier value made its parameters NaN) a uniform draw
    in (-2, 2) in the unconstrained space stands in, and the candidate is rejected later."""

    def init_strategy(site: Any) -> torch.Tensor:
        calls[0] += 1
        try:
            return strategy(site)
        except InitShapeError:
            raise
        except _MODEL_ERRORS:
            fn = site["fn"]
            to_support = biject_to(fn.support)
            shape = to_support.inv.forward_shape(fn.batch_shape + fn.event_shape)
            return to_support(4.0 * torch.rand(shape) - 2.0).detach()

    return init_strategy


def _search(
    model_fn: Callable[..., Any], data: Any, nesting: int, strategy: Callable[[Any], torch.Tensor]
) -> tuple[ChainStart | None, str]:
    """Rounds of Pyro's candidate search; the start found (None if none) and the last reason."""
    why = ""
    calls = [0]
    counted = _counting(strategy, calls)
    for _ in range(_MAX_ROUNDS):
        try:
            with pyro.validation_enabled(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pyro's notes on the candidates it rejects
                z0, potential_fn, transforms, _ = initialize_model(
                    model_fn, model_args=(data,), max_plate_nesting=nesting, init_strategy=counted
                )
        except InitShapeError:
            raise
        except _MODEL_ERRORS as e:
            why = str(e).splitlines()[0]
            continue
        z0 = {k: v.detach() for k, v in z0.items()}
        if _is_finite(potential_fn, z0):
            # each candidate asks the strategy once per latent site
            redraws = max(0, calls[0] // max(1, len(z0)) - 1)
            return ChainStart(z0, potential_fn, transforms, redraws=redraws), ""
        why = "Pyro's checks reject the point its search found"
    return None, why


def nonfinite_sites(
    model_fn: Callable[..., Any], data: Any, strategy: Callable[[Any], torch.Tensor]
) -> list[str]:
    """The sample sites whose value or log density is not finite at one draw of ``strategy``."""
    with pyro.validation_enabled(False), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            trace = poutine.trace(InitMessenger(strategy)(model_fn)).get_trace(data)
        except _MODEL_ERRORS:
            return []
        bad = []
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            fn: Any = site["fn"]
            value: Any = site["value"]
            try:
                lp = fn.log_prob(value)
            except _MODEL_ERRORS:
                bad.append(name)
                continue
            if not (bool(torch.isfinite(value).all()) and bool(torch.isfinite(lp).all())):
                bad.append(name)
    return bad


def find_start(
    model_fn: Callable[..., Any],
    data: Any,
    nesting: int,
    strategy: tuple[Callable[..., Any], bool, bool],
    chain: int,
) -> ChainStart:
    """One chain's checked starting point (see the module docstring).

    ``strategy`` is a Pyro init strategy, whether to jitter the point it gives, and whether it
    repeats given values (then a uniform draw replaces them when they fail).

    Raises
    ------
    ChainFailure
        No candidate of finite potential and gradient was found; the message names the sites
        whose log density is not finite at a candidate.
    """
    init_strategy, jitter, given = strategy
    start, why = _search(model_fn, data, nesting, init_strategy)
    note = None
    if start is None and given:
        note = (
            f"chain {chain}: the given starting values have a non-finite log density or gradient "
            f"({', '.join(repr(s) for s in nonfinite_sites(model_fn, data, init_strategy)) or why}); "
            "drawn uniformly instead"
        )
        warnings.warn(note, StartWarning, stacklevel=5)
        init_strategy, jitter = init_to_uniform, False
        start, why = _search(model_fn, data, nesting, init_strategy)
    if start is None:
        sites = nonfinite_sites(model_fn, data, init_strategy)
        where = f" at site(s) {', '.join(repr(s) for s in sites)}" if sites else ""
        raise ChainFailure(
            f"chain {chain}: no starting point of finite log density and gradient in "
            f"{_MAX_ROUNDS} rounds of draws from the init strategy; the log density is not finite{where} "
            f"({why}).  Give init= values inside the support, or priors that keep the model's "
            "parameters valid."
        )
    start.note = note
    if jitter and not getattr(init_strategy, "per_chain", False):
        start.z = _jitter(start.z, start.potential_fn, INIT_JITTER)
    return start


def find_starts(
    model_fn: Callable[..., Any],
    data: Any,
    nesting: int,
    strategies: list[tuple[Callable[..., Any], bool, bool]],
    seeds: list[int],
) -> list[ChainStart]:
    """Every chain's checked starting point, chain ``c`` drawn after seeding with ``seeds[c]``."""
    out = []
    for c, (strategy, seed) in enumerate(zip(strategies, seeds, strict=True)):
        seed_everything(seed)
        out.append(find_start(model_fn, data, nesting, strategy, c))
    return out


def run_chains_apart(run_one: Callable[[int], _T], num_chains: int) -> tuple[list[_T], dict[int, str]]:
    """``run_one(c)`` for every chain; a chain that raises is left out and named with its error.

    Returns the healthy chains' results in chain order and ``{chain: error}`` for the others, after
    a :class:`StartWarning` per failed chain.  When every chain fails, the first chain's error is
    raised again.
    """
    results: list[_T] = []
    failed: dict[int, str] = {}
    first: Exception | None = None
    for c in range(num_chains):
        try:
            results.append(run_one(c))
        except _MODEL_ERRORS as e:
            first = first or e
            failed[c] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not results and first is not None:
        raise first
    for c, why in failed.items():
        warnings.warn(
            f"MCMC chain {c} failed while sampling and is left out of the fit ({why}); "
            f"the posterior holds the other {len(results)} chain(s).  fit.extras['failed_chains'] names it.",
            StartWarning,
            stacklevel=4,
        )
    return results, failed


def nearby(
    flat: torch.Tensor,
    rows: Callable[[torch.Tensor], list[_State]],
    potential_fn: Callable[[_State], torch.Tensor],
    scale: float = 0.1,
) -> torch.Tensor:
    """``flat`` ``(C, D)`` moved by Gaussian noise of ``scale``, shrunk until every row (as
    ``rows`` splits it) has a finite potential and gradient; ``flat`` itself if none is found."""
    for _ in range(10):
        moved = flat + scale * torch.randn_like(flat)
        if all(_is_finite(potential_fn, z) for z in rows(moved)):
            return moved
        scale /= 2.0
    return flat.clone()
