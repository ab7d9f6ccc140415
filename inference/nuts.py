"""The No-U-Turn Sampler on many chains in lockstep (``method="mcmc", kernel="nuts_batched"``).

Every chain is an independent NUTS chain as Stan runs it (Hoffman and Gelman 2014, with the
multinomial sampling and the generalised U-turn criterion of Betancourt 2017 as Stan 2.x
implements them), but all chains advance together: one leapfrog step of every chain is one
evaluation of the potential and its gradient on a ``(chains, dim)`` tensor
(:class:`probgen.inference.chees.BatchedPotential`, discrete latents summed out, compiled where
that is safe).

- Trees are built iteratively, leaf by leaf, never by recursion: at tree depth ``d`` every chain
  that is still extending its trajectory adds a subtree of ``2**d`` leapfrog steps in its own
  random direction.  A chain whose subtree turns or diverges is masked out of the remaining
  steps of that subtree, and its trajectory ends there; a chain whose whole trajectory has ended
  waits, masked, until every chain's has (the cost of a draw is the longest trajectory of the
  chains).
- Multinomial sampling: inside a subtree the proposal is drawn in proportion to
  ``exp(-H)`` over its leaves (progressively, leaf by leaf); between the trajectory so far and a
  new valid subtree the proposal moves to the subtree's with probability
  ``min(1, w_subtree / w_old)`` (biased progressive sampling).
- The generalised no-U-turn criterion, ``p_sharp_begin . rho > 0`` and ``p_sharp_end . rho > 0``
  with ``rho`` the sum of the momenta of a subtree and ``p_sharp = M^-1 p``, is checked for every
  subtree as it is completed, with Stan's two extra checks at each merge of two subtrees (the
  left one extended by the first state of the right one, and the right one extended by the last
  state of the left one).  Completed subtrees are found from the leaf's index: leaf ``n`` of a
  subtree completes one subtree of size ``2**j`` for each trailing one bit ``j`` of ``n``;
  the pending left siblings are kept, one per level (``O(depth)`` memory).
- A leaf whose energy error ``H - H0`` exceeds 1000, or is not finite, is a divergence; the
  subtree it belongs to is rejected and the trajectory stops.
- Warm-up as Stan's: dual averaging of each chain's log step size towards a mean acceptance
  statistic of ``target_accept_prob``; an inverse mass matrix per chain, diagonal (the variance of
  the chain's draws) or dense (``dense_mass=True``: their covariance), estimated in Stan's windows
  (75 iterations of initial buffer, windows of 25, 50, 100, ... doubling, 50 iterations of
  terminal buffer) by Welford's algorithm, regularised towards ``1e-3`` (times the identity) as
  Stan does, with the step size found afresh (Stan's heuristic) and dual averaging restarted
  after each window.  With a dense matrix ``M^-1`` the momentum is drawn from ``N(0, M)``, the
  kinetic energy is ``p' M^-1 p / 2`` and positions move along ``M^-1 p``.

Per draw (``NUTSResult.stats``, named as ``arviz.from_numpyro`` names them): ``lp`` (minus the
potential energy of the draw), ``energy`` (its Hamiltonian with the momentum it was drawn with),
``step_size``, ``n_steps`` (leapfrog steps), ``tree_depth`` (doublings, the last one included
when it was rejected: ``floor(log2(n_steps)) + 1``), ``acceptance_rate`` (the mean over the
trajectory's leaves of ``min(1, exp(H0 - H))``, Stan's ``accept_stat__``) and ``diverging``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from probgen.inference import _nuts_kernels
from probgen.inference.chees import BatchedPotential, _stan_windows

__all__ = ["NUTSResult", "run_nuts"]

#: Stan's step-size heuristic doubles or halves the step until one leapfrog step's acceptance
#: probability crosses this value.
_HEURISTIC_ACCEPT = 0.8
#: Dual averaging constants (Hoffman and Gelman 2014; Stan's defaults).
_DA_GAMMA, _DA_T0, _DA_KAPPA = 0.05, 10.0, 0.75
#: Regularisation of the windowed variance: ``(n / (n + 5)) var + 1e-3 * 5 / (n + 5)`` (Stan's).
_MASS_PRIOR_WEIGHT, _MASS_PRIOR = 5.0, 1e-3

#: The iteration at which ``compile="auto"`` decides, from the calls per iteration since iteration
#: ``_COMPILE_DECISION // 2`` (the first iterations, at step sizes not yet adapted, take longer
#: trajectories than the rest: counted from the start, eight schools' calls were overestimated 4x).
_COMPILE_DECISION = 100
#: An earlier look, at this iteration, from the calls per iteration since its half, divided by
#: ``_EARLY_DISCOUNT`` (iterations 10 to 20 took 2 to 2.8 times the calls of the later ones on
#: eight schools and logistic regression): a potential that clearly pays for inductor (the
#: enumerated mixture's) compiles there instead of running 80 more iterations uncompiled.
_COMPILE_EARLY, _EARLY_DISCOUNT = 20, 3.0

_STAT_NAMES = ("lp", "energy", "step_size", "n_steps", "tree_depth", "acceptance_rate", "diverging")


@dataclass
class NUTSResult:
    """Draws and per-draw statistics of a batched NUTS run.

    ``draws``: unconstrained states ``(C, S, D)``; ``stats``: arrays ``(C, S)`` by name;
    ``step_size``: each chain's step size after warm-up ``(C,)``; ``trajectory_length``: the
    mean integration time ``step_size * n_steps`` of the draws; ``inverse_mass``: each chain's
    inverse mass matrix, its diagonal ``(C, D)`` or, with ``dense_mass=True``, whole ``(C, D, D)``; ``momentum``: the momentum each draw was drawn with
    ``(C, S, D)`` when asked for (``keep_momentum=True``), else None.
    """

    draws: Tensor
    stats: dict[str, np.ndarray]
    step_size: Tensor
    trajectory_length: float
    inverse_mass: Tensor
    momentum: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _DualAveraging:
    """Nesterov dual averaging of every chain's log step size (Stan's constants), vectorised."""

    def __init__(self, eps: np.ndarray, target: float) -> None:
        self.target = target
        self.restart(eps)

    def restart(self, eps: np.ndarray) -> None:
        self.mu = np.log(10.0 * eps)
        self.t = 0
        self.h_bar = np.zeros_like(eps)
        self.log_x_bar = np.zeros_like(eps)

    def update(self, accept: np.ndarray) -> np.ndarray:
        self.t += 1
        eta = 1.0 / (self.t + _DA_T0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept)
        log_x = self.mu - math.sqrt(self.t) / _DA_GAMMA * self.h_bar
        w = self.t ** (-_DA_KAPPA)
        self.log_x_bar = w * log_x + (1 - w) * self.log_x_bar
        return np.exp(log_x)

    def final(self, eps: np.ndarray) -> np.ndarray:
        return np.exp(self.log_x_bar) if self.t else eps


#: The potential and its gradient of every chain, on numpy arrays ``(C, D) -> (C,), (C, D)``.
_ValueAndGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class _NumpyPotential:
    """The batched potential on numpy arrays (shared memory both ways: no copies), counting calls."""

    def __init__(self, potential: BatchedPotential) -> None:
        self.potential = potential
        self.calls = 0

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        # contiguous rows: a compiled function is specialised to the strides it was compiled for
        pe, grad = self.potential.value_and_grad(torch.from_numpy(np.ascontiguousarray(z)))
        return pe.detach().numpy(), grad.detach().numpy()


class _DiagonalMetric:
    """A diagonal inverse mass matrix per chain, ``(C, D)``; momenta of any leading dims ``(..., C, D)``."""

    def __init__(self, inv_mass: np.ndarray) -> None:
        self.matrix = inv_mass
        self._sd = np.sqrt(inv_mass)

    @classmethod
    def identity(cls, C: int, D: int, dtype: Any) -> _DiagonalMetric:
        return cls(np.ones((C, D), dtype=dtype))

    def move(self, step: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``step M^-1 p``, each chain's signed step ``(C, 1)``."""
        return step * self.matrix * p

    def kinetic(self, p: np.ndarray) -> np.ndarray:
        return 0.5 * (p * p * self.matrix).sum(-1)

    def momentum(self, rng: np.random.Generator) -> np.ndarray:
        """One draw of ``N(0, M)`` per chain."""
        return rng.standard_normal(self.matrix.shape).astype(self.matrix.dtype) / self._sd

    @staticmethod
    def moment(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Welford's update of the window's second moment from ``z - mean`` before and after."""
        return before * after

    @classmethod
    def from_window(cls, count: int, m2: np.ndarray) -> _DiagonalMetric:
        """The window's regularised variance (Stan's): ``(n var + 5e-3) / (n + 5)``."""
        var = m2 / (count - 1) if count > 1 else np.ones_like(m2)
        w = count / (count + _MASS_PRIOR_WEIGHT)
        return cls((w * var + (1 - w) * _MASS_PRIOR).astype(m2.dtype))


class _DenseMetric:
    """A dense inverse mass matrix per chain, ``(C, D, D)``; momenta ``(..., C, D)``."""

    def __init__(self, inv_mass: np.ndarray) -> None:
        self.matrix = inv_mass
        # p ~ N(0, M) as L e with M = L L' (the mass matrix is the inverse's inverse)
        self._chol = np.linalg.cholesky(np.linalg.inv(inv_mass.astype(np.float64))).astype(inv_mass.dtype)

    @classmethod
    def identity(cls, C: int, D: int, dtype: Any) -> _DenseMetric:
        return cls(np.broadcast_to(np.eye(D, dtype=dtype), (C, D, D)).copy())

    def velocity(self, p: np.ndarray) -> np.ndarray:
        """``M^-1 p``."""
        return (self.matrix @ p[..., None])[..., 0]

    def move(self, step: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``step M^-1 p``, each chain's signed step ``(C, 1)``."""
        return step * self.velocity(p)

    def kinetic(self, p: np.ndarray) -> np.ndarray:
        return 0.5 * (p * self.velocity(p)).sum(-1)

    def momentum(self, rng: np.random.Generator) -> np.ndarray:
        """One draw of ``N(0, M)`` per chain."""
        e = rng.standard_normal(self.matrix.shape[:2]).astype(self.matrix.dtype)
        return (self._chol @ e[..., None])[..., 0]

    @staticmethod
    def moment(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Welford's update of the window's co-moment from ``z - mean`` before and after."""
        return before[..., :, None] * after[..., None, :]

    @classmethod
    def from_window(cls, count: int, m2: np.ndarray) -> _DenseMetric:
        """The window's regularised covariance (Stan's): ``(n cov + 5e-3 I) / (n + 5)``."""
        eye = np.eye(m2.shape[-1], dtype=m2.dtype)
        cov = m2 / (count - 1) if count > 1 else np.broadcast_to(eye, m2.shape)
        w = count / (count + _MASS_PRIOR_WEIGHT)
        cov = w * cov + (1 - w) * _MASS_PRIOR * eye
        return cls((0.5 * (cov + np.swapaxes(cov, -1, -2))).astype(m2.dtype))


_Metric = _DiagonalMetric | _DenseMetric


def _leapfrog(
    value_and_grad: _ValueAndGrad,
    z: np.ndarray,
    p: np.ndarray,
    grad: np.ndarray,
    step: np.ndarray,
    metric: _Metric,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One leapfrog step of every chain, each with its own signed step ``(C, 1)``."""
    p = p - 0.5 * step * grad
    z = z + metric.move(step, p)
    pe, grad = value_and_grad(z)
    return z, p - 0.5 * step * grad, pe, grad


def _initial_step_size(
    value_and_grad: _ValueAndGrad,
    z: np.ndarray,
    pe: np.ndarray,
    grad: np.ndarray,
    metric: _Metric,
    eps: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Stan's heuristic, per chain: double or halve the step until the acceptance probability of
    one leapfrog step from ``z`` (a fresh momentum each try) crosses 0.8."""
    direction = np.zeros_like(eps)
    settled = np.zeros(eps.shape, dtype=bool)
    for _ in range(100):
        p = metric.momentum(rng)
        _, p1, pe1, _ = _leapfrog(value_and_grad, z, p, grad, eps[:, None], metric)
        log_accept = (pe + metric.kinetic(p)) - (pe1 + metric.kinetic(p1))
        up = np.nan_to_num(log_accept, nan=-np.inf) > math.log(_HEURISTIC_ACCEPT)
        now = np.where(up, 1.0, -1.0)
        direction = np.where(direction == 0, now, direction)
        settled = settled | (now != direction)
        grown = np.where(direction > 0, eps * 2.0, eps / 2.0)
        settled = settled | (grown > 1e7) | (grown < 1e-10)
        if settled.all():
            break
        eps = np.where(settled, eps, grown).astype(eps.dtype)
    return eps


@dataclass
class _Draw:
    z: np.ndarray
    pe: np.ndarray
    grad: np.ndarray
    momentum: np.ndarray
    energy: np.ndarray
    n_steps: np.ndarray
    depth: np.ndarray
    accept: np.ndarray
    diverging: np.ndarray


def _transition(
    value_and_grad: _ValueAndGrad,
    z: np.ndarray,
    pe: np.ndarray,
    grad: np.ndarray,
    eps: np.ndarray,
    metric: _Metric,
    max_depth: int,
    rng: np.random.Generator,
) -> _Draw:
    """One NUTS transition of every chain in lockstep (see the module docstring).

    A state is packed in one row ``[z | p | grad | pe | H]`` (``3 D + 2`` numbers per chain), so
    that choosing between two states for every chain is one ``np.where``.  The bookkeeping of
    each leaf runs in one compiled call (:func:`probgen.inference._nuts_kernels.leaf`); that of
    each doubling, a few times a draw, on numpy arrays.
    """
    C, D = z.shape
    dtype = z.dtype
    Z, P, G, PE, H = slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D), 3 * D, 3 * D + 1
    p0 = metric.momentum(rng)
    h0 = pe + metric.kinetic(p0)
    start = np.concatenate((z, p0, grad, pe[:, None], h0[:, None]), -1)
    left, right_end, proposal = start.copy(), start.copy(), start.copy()  # the two ends, the proposal
    rho = p0.copy()  # the trajectory's sum of momenta
    log_w = np.zeros(C, dtype=dtype)  # log sum of exp(H0 - H) over the trajectory
    done = np.zeros(C, dtype=bool)
    diverging = np.zeros(C, dtype=bool)
    n_steps = np.zeros(C, dtype=np.int64)
    depth = np.zeros(C, dtype=np.int64)
    sum_accept = np.zeros(C, dtype=dtype)
    dense = isinstance(metric, _DenseMetric)
    diag = metric.matrix if not dense else np.ones((C, 1), dtype=dtype)
    full = metric.matrix if dense else np.ones((C, 1, 1), dtype=dtype)
    eps = eps.astype(dtype, copy=False)
    # the current doubling: its direction, signed step, front state, the momenta at the far and
    # near ends of the trajectory so far, and the subtree's log weight, momentum sum, proposal,
    # first momentum and whether it turned or diverged; the next leaf's positions and momenta
    right, step = np.zeros(C, dtype=bool), np.zeros(C, dtype=dtype)
    front, sub_prop, rows = np.empty_like(start), np.empty_like(start), np.empty_like(start)
    p_far, p_near, p_first, sub_rho = (np.empty_like(z) for _ in range(4))
    sub_w, sub_bad = np.empty(C, dtype=dtype), np.zeros(C, dtype=bool)
    z1, p_half = np.empty_like(z), np.empty_like(z)
    pending = np.empty((max(max_depth - 1, 1), 3, C, D), dtype=dtype)  # left spans awaiting a right
    for d in range(max_depth):
        if done.all():
            break
        active = ~done
        _nuts_kernels.subtree_start(
            rng.random(C), eps, done, left, right_end, depth, right, step, front, p_far, p_near,
            sub_w, sub_rho, sub_prop, sub_bad, p_first, z1, p_half, diag, full, dense,
        )  # fmt: skip
        for n in range(2**d):
            pe1, g1 = value_and_grad(z1)
            more = _nuts_kernels.leaf(
                n, d, rows, z1, p_half, pe1.astype(dtype, copy=False), g1.astype(dtype, copy=False),
                h0, step, active, front, sub_bad, sub_w, sub_rho, sub_prop, p_first, pending,
                n_steps, sum_accept, diverging, rng.random(C), diag, full, dense,
            )  # fmt: skip
            if not more:
                break
        _nuts_kernels.subtree_end(
            rng.random(C), done, right, sub_bad, sub_w, sub_prop, sub_rho, front, p_far, p_near,
            p_first, log_w, proposal, left, right_end, rho, diag, full, dense,
        )  # fmt: skip
    accept = (sum_accept / np.maximum(n_steps, 1)).astype(dtype)
    return _Draw(
        proposal[:, Z],
        proposal[:, PE],
        proposal[:, G],
        proposal[:, P],
        proposal[:, H],
        n_steps,
        depth,
        accept,
        diverging,
    )


def run_nuts(
    potential: BatchedPotential,
    init: Tensor,
    *,
    num_warmup: int,
    num_samples: int,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    initial_step_size: float | None = None,
    progress: bool = False,
    keep_momentum: bool = False,
    dense_mass: bool = False,
    keep_warmup: bool = False,
    compile: bool | str = False,
) -> NUTSResult:
    """Warm up and sample every chain of ``potential`` in lockstep from ``init`` ``(C, D)``.

    Random numbers come from torch's global generator (seed it first for reproducible draws).

    Parameters
    ----------
    potential : BatchedPotential
        The potential energy of all chains at once, with its gradient.
    init : Tensor, shape (C, D)
        Each chain's unconstrained starting point.
    num_warmup, num_samples : int
        Adaptation iterations (discarded) and draws kept, per chain.
    target_accept_prob : float, default 0.8
        Step-size adaptation target for the mean acceptance statistic.
    max_tree_depth : int, default 10
        Doublings of a trajectory at most (``2**max_tree_depth - 1`` leapfrog steps).
    initial_step_size : float or None, default None
        None: found per chain by Stan's heuristic.
    progress : bool, default False
        A progress bar.
    keep_momentum : bool, default False
        Keep each draw's momentum in ``NUTSResult.momentum`` (``energy`` is the draw's potential
        energy plus its kinetic energy under that chain's ``inverse_mass``).
    dense_mass : bool, default False
        Adapt a dense inverse mass matrix per chain (the windowed covariance of its draws)
        instead of a diagonal one (their variances): for posteriors with strong correlations,
        at ``O(D**2)`` work per leapfrog step (as Pyro's ``full_mass`` and NumPyro's
        ``dense_mass``).
    keep_warmup : bool, default False
        Keep the warm-up iterations too: ``NUTSResult.extra["warmup_draws"]`` ``(C, num_warmup,
        D)`` and ``extra["warmup_stats"]`` (the same statistics as ``stats``).
    compile : bool or "auto", default False
        Compile the potential's traced graph with inductor (:meth:`BatchedPotential.inductor`):
        True before sampling, "auto" when the calls still expected pay for its compile time:
        looked at after 20 iterations (a third of the calls per iteration over iterations 10 to
        20, times the iterations left) and, if not compiled then, after 100 (the calls per
        iteration over iterations 50 to 100)
        (``extra["compiler_note"]`` gives the figures).  A timed decision: with "auto" a fixed
        seed gives draws that differ in float rounding only between a run that compiled and one
        that did not.

    Returns
    -------
    NUTSResult

    Raises
    ------
    ValueError
        A chain starts at a point of zero density or a non-finite gradient, or an option is out
        of range.
    """
    if init.dim() != 2:
        raise ValueError(f"init must have shape (chains, dim); got shape {tuple(init.shape)}.")
    if not 0 < target_accept_prob < 1:
        raise ValueError(f"target_accept_prob must be in (0, 1); got {target_accept_prob!r}.")
    if max_tree_depth < 1:
        raise ValueError(f"max_tree_depth must be at least 1; got {max_tree_depth!r}.")
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto'; got {compile!r}.")
    if num_warmup < 0 or num_samples < 1:
        raise ValueError(
            f"num_warmup must be >= 0 and num_samples >= 1; got {num_warmup!r} and {num_samples!r}."
        )
    # the states were checked at the start (none is out of support); an energy that overflows is a
    # divergence, not a warning
    with pyro.validation_enabled(False), np.errstate(all="ignore"):
        return _run(
            potential,
            init,
            num_warmup,
            num_samples,
            target_accept_prob,
            max_tree_depth,
            initial_step_size,
            progress,
            keep_momentum,
            dense_mass,
            keep_warmup,
            compile,
        )


def _run(
    potential: BatchedPotential,
    init: Tensor,
    num_warmup: int,
    num_samples: int,
    target: float,
    max_depth: int,
    initial_step_size: float | None,
    progress: bool,
    keep_momentum: bool,
    dense_mass: bool,
    keep_warmup: bool = False,
    compile: bool | str = False,
) -> NUTSResult:
    C, D = init.shape
    # one numpy generator for the run, seeded from torch's global generator
    rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
    value_and_grad = _NumpyPotential(potential)
    calls_then = 0
    # a potential without a traced graph (any object with value_and_grad) is run as it is
    inductor = getattr(potential, "inductor", None) if compile else None
    if inductor is not None and compile is True:
        inductor([init.detach()])
    z = init.detach().clone().numpy()
    dtype = z.dtype
    pe, grad = value_and_grad(z)
    bad = ~(np.isfinite(pe) & np.isfinite(grad).all(-1))
    if bad.any():
        raise ValueError(
            f"chain(s) {np.flatnonzero(bad).tolist()} start at a point of zero density or with a "
            "non-finite gradient; give other starting points"
        )
    kind = _DenseMetric if dense_mass else _DiagonalMetric
    metric: _Metric = kind.identity(C, D, dtype)
    eps = np.full(C, initial_step_size or 1.0, dtype=dtype)
    if initial_step_size is None:
        eps = _initial_step_size(value_and_grad, z, pe, grad, metric, eps, rng)
    da = _DualAveraging(eps, target)
    eps_final = eps
    buffer, ends = _stan_windows(num_warmup)
    window_ends = set(ends)
    last_end = ends[-1] if ends else 0
    count = 0
    mean = np.zeros((C, D), dtype=dtype)
    m2 = np.zeros(metric.matrix.shape, dtype=dtype)

    keep = np.empty((C, num_samples, D), dtype=dtype)
    momenta = np.empty((C, num_samples, D), dtype=dtype) if keep_momentum else None
    stats = {k: np.zeros((C, num_samples)) for k in _STAT_NAMES}
    warm_div = 0
    warm_keep = np.empty((C, num_warmup if keep_warmup else 0, D), dtype=dtype)
    warm_stats = {k: np.zeros((C, warm_keep.shape[1])) for k in _STAT_NAMES}
    # compile="auto": the iterations at which inductor is considered, each with the divisor of the
    # calls per iteration counted since its half
    auto = inductor is not None and compile == "auto"
    looks = {_COMPILE_EARLY: _EARLY_DISCOUNT, _COMPILE_DECISION: 1.0} if auto else {}
    bar = tqdm(range(num_warmup + num_samples), disable=not progress, desc="nuts")
    for it in bar:
        if 2 * it in looks:
            calls_then = value_and_grad.calls
        if it in looks and inductor is not None:
            rate = (value_and_grad.calls - calls_then) / (it // 2) / looks[it]
            left = (num_warmup + num_samples - it) * rate
            inductor([torch.from_numpy(z.copy()), init.detach()], expected_calls=left)
        warm = it < num_warmup
        step = eps if warm else eps_final
        draw = _transition(value_and_grad, z, pe, grad, step, metric, max_depth, rng)
        z, pe, grad = draw.z, draw.pe, draw.grad
        if warm:
            warm_div += int(draw.diverging.sum())
            if keep_warmup:
                warm_keep[:, it] = z
                for key, value in zip(_STAT_NAMES, _draw_stats(draw, step), strict=True):
                    warm_stats[key][:, it] = value
            eps = da.update(draw.accept).astype(dtype)
            if buffer <= it < last_end:  # Welford's running (co)variance of the window's draws
                count += 1
                delta = z - mean
                mean = mean + delta / count
                m2 = m2 + kind.moment(delta, z - mean)
            if it + 1 in window_ends:
                metric = kind.from_window(count, m2)
                count, mean, m2 = 0, np.zeros_like(mean), np.zeros_like(m2)
                eps = _initial_step_size(value_and_grad, z, pe, grad, metric, eps, rng)
                da.restart(eps)
            if it + 1 == num_warmup:
                eps_final = da.final(eps).astype(dtype)
        else:
            s = it - num_warmup
            keep[:, s] = z
            if momenta is not None:
                momenta[:, s] = draw.momentum
            stats["lp"][:, s] = -pe
            stats["energy"][:, s] = draw.energy
            stats["step_size"][:, s] = step
            stats["n_steps"][:, s] = draw.n_steps
            stats["tree_depth"][:, s] = draw.depth
            stats["acceptance_rate"][:, s] = draw.accept
            stats["diverging"][:, s] = draw.diverging
    bar.close()
    stats["diverging"] = stats["diverging"].astype(bool)
    for key in ("n_steps", "tree_depth"):
        stats[key] = stats[key].astype(np.int64)
    length = float(np.mean(stats["step_size"] * stats["n_steps"]))
    return NUTSResult(
        draws=torch.from_numpy(keep),
        stats=stats,
        step_size=torch.from_numpy(eps_final.copy()),
        trajectory_length=length,
        inverse_mass=torch.from_numpy(metric.matrix.copy()),
        momentum=None if momenta is None else torch.from_numpy(momenta),
        extra={"warmup_divergences": warm_div, "compiler_note": getattr(potential, "compiler_note", None)}
        | ({"warmup_draws": torch.from_numpy(warm_keep), "warmup_stats": warm_stats} if keep_warmup else {}),
    )


def _draw_stats(draw: _Draw, step: np.ndarray) -> tuple[np.ndarray, ...]:
    """One iteration's statistics of every chain, in the order of ``_STAT_NAMES``."""
    return (-draw.pe, draw.energy, step, draw.n_steps, draw.depth, draw.accept, draw.diverging)
