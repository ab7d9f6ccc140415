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
  statistic of ``target_accept_prob``; a diagonal inverse mass matrix per chain, the variance of
  the chain's draws in Stan's windows (75 iterations of initial buffer, windows of 25, 50, 100,
  ... doubling, 50 iterations of terminal buffer) by Welford's algorithm, regularised towards
  ``1e-3`` as Stan does, with the step size found afresh (Stan's heuristic) and dual averaging
  restarted after each window.

Per draw (``NUTSResult.stats``, named as ``arviz.from_numpyro`` names them): ``lp`` (minus the
potential energy of the draw), ``energy`` (its Hamiltonian with the momentum it was drawn with),
``step_size``, ``n_steps`` (leapfrog steps), ``tree_depth`` (doublings, the last one included
when it was rejected: ``floor(log2(n_steps)) + 1``), ``acceptance_rate`` (the mean over the
trajectory's leaves of ``min(1, exp(H0 - H))``, Stan's ``accept_stat__``) and ``diverging``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from probgen.inference.chees import BatchedPotential, _stan_windows

__all__ = ["NUTSResult", "run_nuts"]

#: An energy error above this is a divergence (Stan's and NumPyro's threshold).
_MAX_ENERGY_ERROR = 1000.0
#: Stan's step-size heuristic doubles or halves the step until one leapfrog step's acceptance
#: probability crosses this value.
_HEURISTIC_ACCEPT = 0.8
#: Dual averaging constants (Hoffman and Gelman 2014; Stan's defaults).
_DA_GAMMA, _DA_T0, _DA_KAPPA = 0.05, 10.0, 0.75
#: Regularisation of the windowed variance: ``(n / (n + 5)) var + 1e-3 * 5 / (n + 5)`` (Stan's).
_MASS_PRIOR_WEIGHT, _MASS_PRIOR = 5.0, 1e-3

_STAT_NAMES = ("lp", "energy", "step_size", "n_steps", "tree_depth", "acceptance_rate", "diverging")


@dataclass
class NUTSResult:
    """Draws and per-draw statistics of a batched NUTS run.

    ``draws``: unconstrained states ``(C, S, D)``; ``stats``: arrays ``(C, S)`` by name;
    ``step_size``: each chain's step size after warm-up ``(C,)``; ``trajectory_length``: the
    mean integration time ``step_size * n_steps`` of the draws; ``inverse_mass``: each chain's
    diagonal inverse mass matrix ``(C, D)``; ``momentum``: the momentum each draw was drawn with
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

    def __init__(self, eps: Tensor, target: float) -> None:
        self.target = target
        self.restart(eps)

    def restart(self, eps: Tensor) -> None:
        self.mu = torch.log(10.0 * eps)
        self.t = 0
        self.h_bar = torch.zeros_like(eps)
        self.log_x_bar = torch.zeros_like(eps)

    def update(self, accept: Tensor) -> Tensor:
        self.t += 1
        eta = 1.0 / (self.t + _DA_T0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept)
        log_x = self.mu - math.sqrt(self.t) / _DA_GAMMA * self.h_bar
        w = self.t ** (-_DA_KAPPA)
        self.log_x_bar = w * log_x + (1 - w) * self.log_x_bar
        return torch.exp(log_x)

    def final(self, eps: Tensor) -> Tensor:
        return torch.exp(self.log_x_bar) if self.t else eps


def _kinetic(p: Tensor, inv_mass: Tensor) -> Tensor:
    return 0.5 * (p * p * inv_mass).sum(-1)


def _turned(p_begin: Tensor, p_end: Tensor, rho: Tensor, inv_mass: Tensor) -> Tensor:
    """Per chain, whether the generalised no-U-turn criterion fails for a span of momenta summing
    to ``rho`` that begins with momentum ``p_begin`` and ends with ``p_end`` (any leading dims)."""
    sharp_rho = inv_mass * rho
    return ~(((p_begin * sharp_rho).sum(-1) > 0) & ((p_end * sharp_rho).sum(-1) > 0))


_Span = tuple[Tensor, Tensor, Tensor]  # first momentum, last momentum, sum of momenta


def _merge_turned(left: _Span, right: _Span, inv_mass: Tensor) -> Tensor:
    """The U-turn checks of Stan 2.x when two adjacent spans merge (in the order they were built):
    the merged span, the left span extended by the right's first state, and the right span
    extended by the left's last state; all three in one batched evaluation."""
    (lb, le, lr), (rb, re, rr) = left, right
    begins = torch.stack((lb, lb, le))
    ends = torch.stack((re, rb, re))
    rhos = torch.stack((lr + rr, lr + rb, rr + le))
    return _turned(begins, ends, rhos, inv_mass).any(0)


def _leapfrog(
    potential: BatchedPotential, z: Tensor, p: Tensor, grad: Tensor, step: Tensor, inv_mass: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One leapfrog step of every chain, each with its own signed step ``(C, 1)``."""
    p = p - 0.5 * step * grad
    z = z + step * inv_mass * p
    pe, grad = potential.value_and_grad(z)
    return z, p - 0.5 * step * grad, pe, grad


def _initial_step_size(
    potential: BatchedPotential, z: Tensor, pe: Tensor, grad: Tensor, inv_mass: Tensor, eps: Tensor
) -> Tensor:
    """Stan's heuristic, per chain: double or halve the step until the acceptance probability of
    one leapfrog step from ``z`` (a fresh momentum each try) crosses 0.8."""
    direction = torch.zeros_like(eps)
    settled = torch.zeros(eps.shape, dtype=torch.bool)
    scale = inv_mass.rsqrt()
    for _ in range(100):
        p = torch.randn_like(z) * scale
        _, p1, pe1, _ = _leapfrog(potential, z, p, grad, eps[:, None], inv_mass)
        log_accept = (pe + _kinetic(p, inv_mass)) - (pe1 + _kinetic(p1, inv_mass))
        up = torch.nan_to_num(log_accept, nan=-math.inf) > math.log(_HEURISTIC_ACCEPT)
        now = torch.where(up, 1.0, -1.0).to(eps.dtype)
        direction = torch.where(direction == 0, now, direction)
        settled = settled | (now != direction)
        grown = torch.where(direction > 0, eps * 2.0, eps / 2.0)
        settled = settled | (grown > 1e7) | (grown < 1e-10)
        if bool(settled.all()):
            break
        eps = torch.where(settled, eps, grown)
    return eps


@dataclass
class _Draw:
    z: Tensor
    pe: Tensor
    grad: Tensor
    momentum: Tensor
    energy: Tensor
    n_steps: Tensor
    depth: Tensor
    accept: Tensor
    diverging: Tensor


def _transition(
    potential: BatchedPotential,
    z: Tensor,
    pe: Tensor,
    grad: Tensor,
    eps: Tensor,
    inv_mass: Tensor,
    max_depth: int,
) -> _Draw:
    """One NUTS transition of every chain in lockstep (see the module docstring).

    A state is packed in one row ``[z | p | grad | pe | H]`` (``3 D + 2`` numbers per chain), so
    that choosing between two states for every chain is one ``torch.where``.
    """
    C, D = z.shape
    dtype = z.dtype
    Z, P, G, PE, H = slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D), 3 * D, 3 * D + 1
    p0 = torch.randn_like(z) * inv_mass.rsqrt()
    h0 = pe + _kinetic(p0, inv_mass)
    start = torch.cat((z, p0, grad, pe[:, None], h0[:, None]), -1)
    left, right_end, proposal = start, start, start  # the trajectory's two ends, the proposal
    rho = p0  # the trajectory's sum of momenta
    log_w = torch.zeros(C, dtype=dtype)  # log sum of exp(H0 - H) over the trajectory
    done = torch.zeros(C, dtype=torch.bool)
    diverging = torch.zeros(C, dtype=torch.bool)
    n_steps = torch.zeros(C, dtype=torch.long)
    depth = torch.zeros(C, dtype=torch.long)
    sum_accept = torch.zeros(C, dtype=dtype)
    for d in range(max_depth):
        active = ~done
        if not bool(active.any()):
            break
        depth = depth + active.long()
        right = torch.rand(C) < 0.5
        step = torch.where(right, eps, -eps)[:, None]
        # extend from the end in each chain's direction
        front = torch.where(right[:, None], right_end, left)
        p_far, p_near = torch.where(right[:, None], left[:, P], right_end[:, P]), front[:, P]
        sub_w = torch.full((C,), -math.inf, dtype=dtype)
        sub_rho = torch.zeros_like(z)
        sub_prop = front  # replaced at the first leaf of every valid subtree
        sub_bad = torch.zeros(C, dtype=torch.bool)  # turned or diverged inside the subtree
        p_first = p_near
        pending: list[_Span | None] = [None] * d  # left siblings awaiting their right sibling
        for n in range(2**d):
            live = active & ~sub_bad
            if not bool(live.any()):
                break
            zf, pf, gf = front[:, Z], front[:, P], front[:, G]
            p_half = pf - 0.5 * step * gf
            z1 = torch.where(live[:, None], zf + step * inv_mass * p_half, zf)  # waiting chains stay put
            pe1, g1 = potential.value_and_grad(z1)
            p1 = p_half - 0.5 * step * g1
            h1 = pe1 + _kinetic(p1, inv_mass)
            leaf = torch.cat((z1, p1, g1, pe1[:, None], h1[:, None]), -1)
            delta = torch.nan_to_num(h1 - h0, nan=math.inf)
            div = live & ~((delta <= _MAX_ENERGY_ERROR) & torch.isfinite(g1).all(-1))
            ok = live & ~div
            n_steps = n_steps + live.long()
            sum_accept = sum_accept + torch.where(live, torch.exp(torch.clamp(-delta, max=0.0)), 0.0)
            diverging = diverging | div
            # multinomial sampling within the subtree: the new leaf with probability w / sum(w)
            new_w = torch.logaddexp(sub_w, -delta)
            take = ok & (torch.rand(C, dtype=dtype) < torch.exp(-delta - new_w))
            sub_w = torch.where(ok, new_w, sub_w)
            sub_prop = torch.where(take[:, None], leaf, sub_prop)
            ok_col = ok[:, None]
            sub_rho = torch.where(ok_col, sub_rho + p1, sub_rho)
            front = torch.where(ok_col, leaf, front)
            if n == 0:
                p_first = front[:, P]
            # the U-turn checks of every subtree this leaf completes
            node: _Span = (p1, p1, p1)
            turned: Tensor | None = None
            for j in range(d):
                if (n >> j) & 1:
                    sibling = pending[j]
                    assert sibling is not None
                    if j == 0:  # two single states: the extra checks are the merged one
                        now = _turned(sibling[0], p1, sibling[2] + p1, inv_mass)
                    else:
                        now = _merge_turned(sibling, node, inv_mass)
                    turned = now if turned is None else turned | now
                    node = (sibling[0], node[1], sibling[2] + node[2])
                else:
                    pending[j] = node
                    break
            sub_bad = sub_bad | div
            if turned is not None:
                sub_bad = sub_bad | (ok & turned)
        valid = active & ~sub_bad
        # biased progressive sampling between the trajectory so far and the new subtree
        take = valid & (torch.rand(C, dtype=dtype) < torch.exp(torch.clamp(sub_w - log_w, max=0.0)))
        proposal = torch.where(take[:, None], sub_prop, proposal)
        log_w = torch.where(valid, torch.logaddexp(log_w, sub_w), log_w)
        right_end = torch.where((valid & right)[:, None], front, right_end)
        left = torch.where((valid & ~right)[:, None], front, left)
        turned_all = _merge_turned((p_far, p_near, rho), (p_first, front[:, P], sub_rho), inv_mass)
        rho = torch.where(valid[:, None], rho + sub_rho, rho)
        done = done | ~valid | turned_all
    accept = sum_accept / n_steps.clamp(min=1).to(dtype)
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
    if num_warmup < 0 or num_samples < 1:
        raise ValueError(
            f"num_warmup must be >= 0 and num_samples >= 1; got {num_warmup!r} and {num_samples!r}."
        )
    with pyro.validation_enabled(False):  # the states were checked at the start; none is out of support
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
) -> NUTSResult:
    C, D = init.shape
    z = init.detach().clone()
    pe, grad = potential.value_and_grad(z)
    bad = ~(torch.isfinite(pe) & torch.isfinite(grad).all(-1))
    if bool(bad.any()):
        raise ValueError(
            f"chain(s) {bad.nonzero().flatten().tolist()} start at a point of zero density or with a "
            "non-finite gradient; give other starting points"
        )
    dtype = z.dtype
    inv_mass = torch.ones(C, D, dtype=dtype)
    eps = torch.ones(C, dtype=dtype) * (initial_step_size or 1.0)
    if initial_step_size is None:
        eps = _initial_step_size(potential, z, pe, grad, inv_mass, eps)
    da = _DualAveraging(eps, target)
    eps_final = eps
    buffer, ends = _stan_windows(num_warmup)
    window_ends = set(ends)
    last_end = ends[-1] if ends else 0
    count = 0
    mean = torch.zeros(C, D, dtype=dtype)
    m2 = torch.zeros(C, D, dtype=dtype)

    keep = torch.empty(C, num_samples, D, dtype=dtype)
    momenta = torch.empty(C, num_samples, D, dtype=dtype) if keep_momentum else None
    stats = {k: np.zeros((C, num_samples)) for k in _STAT_NAMES}
    warm_div = 0
    bar = tqdm(range(num_warmup + num_samples), disable=not progress, desc="nuts")
    for it in bar:
        warm = it < num_warmup
        step = eps if warm else eps_final
        draw = _transition(potential, z, pe, grad, step, inv_mass, max_depth)
        z, pe, grad = draw.z, draw.pe, draw.grad
        if warm:
            warm_div += int(draw.diverging.sum())
            eps = da.update(draw.accept)
            if buffer <= it < last_end:  # Welford's running variance of the window's draws
                count += 1
                delta = z - mean
                mean = mean + delta / count
                m2 = m2 + delta * (z - mean)
            if it + 1 in window_ends:
                var = m2 / (count - 1) if count > 1 else torch.ones_like(m2)
                inv_mass = (count / (count + _MASS_PRIOR_WEIGHT)) * var + _MASS_PRIOR * (
                    _MASS_PRIOR_WEIGHT / (count + _MASS_PRIOR_WEIGHT)
                )
                count, mean, m2 = 0, torch.zeros_like(mean), torch.zeros_like(m2)
                eps = _initial_step_size(potential, z, pe, grad, inv_mass, eps)
                da.restart(eps)
            if it + 1 == num_warmup:
                eps_final = da.final(eps)
        else:
            s = it - num_warmup
            keep[:, s] = z
            if momenta is not None:
                momenta[:, s] = draw.momentum
            stats["lp"][:, s] = (-pe).numpy()
            stats["energy"][:, s] = draw.energy.numpy()
            stats["step_size"][:, s] = step.numpy()
            stats["n_steps"][:, s] = draw.n_steps.numpy()
            stats["tree_depth"][:, s] = draw.depth.numpy()
            stats["acceptance_rate"][:, s] = draw.accept.numpy()
            stats["diverging"][:, s] = draw.diverging.numpy()
    bar.close()
    stats["diverging"] = stats["diverging"].astype(bool)
    for key in ("n_steps", "tree_depth"):
        stats[key] = stats[key].astype(np.int64)
    length = float(np.mean(stats["step_size"] * stats["n_steps"]))
    return NUTSResult(
        draws=keep,
        stats=stats,
        step_size=eps_final,
        trajectory_length=length,
        inverse_mass=inv_mass,
        momentum=momenta,
        extra={"warmup_divergences": warm_div},
    )
