"""ChEES-HMC: many chains in lockstep on one batched potential (``method="mcmc", kernel="chees"``).

Hoffman, Radul and Sountsov (2021), "An adaptive MCMC scheme for setting trajectory lengths in
Hamiltonian Monte Carlo" (AISTATS).  Every chain shares one step size, one trajectory length and
one diagonal mass matrix, so a leapfrog step of all chains is one evaluation of the potential
and its gradient on a ``(chains, dim)`` tensor:

- the potential of all chains at once: the model is traced once with the chains as an extra
  plate left of its own plates, every continuous site conditioned on a ``(chains, ...)`` value;
  discrete latents are summed out by tensor variable elimination down to the chains plate
  (``pyro.ops.contract``); the result is checked against Pyro's own one-state potential at every
  chain's starting point before sampling starts, so a model that does not broadcast over the
  extra dim is caught (a ``ValueError`` naming the reason, never silent wrong answers);
- the potential and its gradient are traced together to one static graph of ATen operations
  (``make_fx``) and compiled with ``torch.jit.trace``, which removes Pyro's per-call tracing
  cost; the compiled function is checked against the uncompiled one at two sets of points, and a
  model whose trace reads tensor values (Python control flow), or that the tracers cannot
  follow, runs uncompiled (``fit.extras["chees"]["compiled"]`` says which);
- each transition integrates ``ceil(h * T / eps)`` leapfrog steps, ``h`` a Halton (van der Corput)
  jitter in (0, 1) shifted by the seed, and accepts per chain by Metropolis; an energy error
  above 1000 (or a non-finite one) is a divergence and rejected;
- warm-up: the step size ``eps`` by dual averaging (Hoffman and Gelman 2014) on the mean of
  the chains' acceptance probabilities (a divergent transition counts as 0), the trajectory
  length ``T`` by Adam on the gradient of the ChEES criterion
  ``E[(|x' - mean x'|^2 - |x - mean x|^2)^2] / 4`` with respect to ``log T`` (acceptance-weighted
  over chains), the diagonal inverse mass matrix from the variance of every chain's warm-up draws
  over Stan's doubling windows (regularised towards 1e-3 as Stan does).  After warm-up ``eps``
  and ``T`` are fixed at their running averages;
- stuck chains: over the last :data:`_HEALTH_WINDOW` warm-up iterations a chain is stuck when
  most of its transitions diverge or almost none are accepted while the median chain fares well,
  or when its mean potential lies far above the other chains' median (more than
  :data:`_MAX_POTENTIAL_GAP` times their spread, and at least that many times ``sqrt(D / 2)``,
  the spread of the potential of a ``D``-dimensional Gaussian); a stuck chain is left out of the
  step-size dual averaging, the ChEES gradient and the mass-matrix variance, and restarted from
  a healthy chain's state with a jitter of a tenth of the mass matrix's scale (not in the last
  tenth of warm-up, so every chain has time to move away from the one it was copied from);
  Adam's state for ``T`` starts again after a restart;
- ``T`` has a floor: :data:`_MIN_STEPS` leapfrog steps, and once a mass matrix is adapted
  :data:`_MIN_WHITENED_T` (the time in which a free particle crosses one posterior standard
  deviation, since the velocity ``M^-1 p`` then has the posterior's scale), so a few chains'
  noisy gradients cannot shrink the trajectories to a random walk.

All chains cost about one: the model is evaluated once per leapfrog step for all of them.  With
few chains the across-chain ChEES gradient is noisy; 16 to 64 chains adapt better (the defaults
keep the backend's ``num_chains``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from probgen.errors import ConvergenceWarning
from probgen.inference._potential import BatchedPotential

__all__ = ["BatchedPotential", "ChEESResult", "run_chees"]  # BatchedPotential: re-exported from _potential

#: An energy error above this is a divergence (Stan's and NumPyro's threshold).
_MAX_ENERGY_ERROR = 1000.0
#: Adam's learning rate and second-moment decay for log T (the paper's and TFP's values).
_ADAM_RATE = 0.025
_ADAM_BETA2 = 0.95
#: Weight of the newest value in the running averages of eps and T: t ** -_AVERAGE_DECAY.
_AVERAGE_DECAY = 0.5
#: Warm-up iterations over which a chain's divergences, acceptance and potential are judged.
_HEALTH_WINDOW = 20
#: A chain whose share of divergent transitions in the window is above this is stuck...
_MAX_DIVERGENT_SHARE = 0.5
#: ...as is one whose mean acceptance probability in the window is below this...
_MIN_CHAIN_ACCEPT = 0.05
#: ...while the median chain's is above this (else the step size, not the chain, is at fault).
_MEDIAN_ACCEPT_OK = 0.3
#: A chain whose mean potential is this many spreads above the median chain's is stuck.
_MAX_POTENTIAL_GAP = 10.0
#: The jitter of a restarted chain, in units of the mass matrix's scale ``sqrt(M^-1)``.
_RESTART_JITTER = 0.1
#: Floors of T: this many leapfrog steps, and (once a mass matrix is adapted) this multiple of
#: the time in which the velocity ``M^-1 p`` crosses one posterior standard deviation.
_MIN_STEPS = 4
_MIN_WHITENED_T = 1.0


def _van_der_corput(i: int) -> float:
    """The ``i``-th point (``i >= 1``) of the base-2 van der Corput sequence, in (0, 1)."""
    out, denom = 0.0, 1.0
    while i:
        denom *= 2.0
        out += (i & 1) / denom
        i >>= 1
    return out


def _stan_windows(warmup: int) -> tuple[int, list[int]]:
    """End of the initial buffer, and the warm-up iterations after which the mass matrix is
    updated (Stan's doubling windows: 75 + 25, 50, 100, ... + 50 iterations by default)."""
    if warmup < 20:
        return warmup, []
    init, term, base = 75, 50, 25
    if init + term + base > warmup:
        init, term = int(0.15 * warmup), int(0.1 * warmup)
        base = warmup - init - term
    ends = []
    start, size = init, base
    while True:
        end = start + size
        if end + 2 * size > warmup - term:  # the last window stretches to the terminal buffer
            ends.append(warmup - term)
            break
        ends.append(end)
        start, size = end, 2 * size
    return init, ends


@dataclass
class _DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman and Gelman 2014, Stan's constants)."""

    mu: float
    target: float
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75
    t: int = 0
    h_bar: float = 0.0
    log_x_bar: float = 0.0

    def update(self, accept: float) -> float:
        self.t += 1
        eta = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept)
        log_x = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        w = self.t ** (-self.kappa)
        self.log_x_bar = w * log_x + (1 - w) * self.log_x_bar
        return math.exp(log_x)


@dataclass
class ChEESResult:
    """Draws and per-draw statistics of a ChEES run.

    ``draws``: unconstrained states ``(C, S, D)``; ``stats``: arrays ``(C, S)`` by name;
    ``step_size`` and ``trajectory_length``: the values kept after warm-up; ``inverse_mass``:
    the diagonal inverse mass matrix ``(D,)``.  ``extra`` holds ``warmup_divergences``,
    ``restarts`` (per chain, the times it was found stuck in warm-up and restarted) and
    ``unhealthy_chains`` (chains still stuck at the end of warm-up, or whose draws diverge or
    are rejected far more often than the median chain's).
    """

    draws: Tensor
    stats: dict[str, np.ndarray]
    step_size: float
    trajectory_length: float
    inverse_mass: Tensor
    compiled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _find_step_size(
    potential: BatchedPotential,
    z: Tensor,
    pe: Tensor,
    grad: Tensor,
    inv_mass: Tensor,
    healthy: Tensor | None = None,
) -> float:
    """Stan's heuristic: double or halve one leapfrog step until the mean acceptance of the
    ``healthy`` chains (all when None) crosses 1/2."""
    keep = torch.ones(z.shape[0], dtype=torch.bool) if healthy is None or not bool(healthy.any()) else healthy
    eps = 1.0
    direction = 0
    for _ in range(60):
        p = torch.randn_like(z) / inv_mass.sqrt()
        h0 = pe + 0.5 * (p * p * inv_mass).sum(-1)
        z1, p1, pe1, _ = _leapfrog(potential, z, p, grad, eps, 1, inv_mass)
        h1 = pe1 + 0.5 * (p1 * p1 * inv_mass).sum(-1)
        delta = torch.nan_to_num(h0 - h1, nan=-math.inf)[keep]
        log_accept = float(torch.logsumexp(torch.clamp(delta, max=0.0), 0)) - math.log(len(delta))
        step = 1 if log_accept > math.log(0.5) else -1
        if direction == 0:
            direction = step
        elif step != direction:
            break
        eps = eps * 2.0 if direction == 1 else eps / 2.0
        if not 1e-7 < eps < 1e7:
            break
    return eps


class _ChainHealth:
    """Each chain's divergences, acceptance probabilities and potentials over the last
    :data:`_HEALTH_WINDOW` warm-up iterations, and which chains they show to be stuck."""

    def __init__(self, chains: int, dim: int) -> None:
        self.diverging = np.zeros((chains, _HEALTH_WINDOW), dtype=bool)
        self.accept = np.ones((chains, _HEALTH_WINDOW))
        self.potential = np.zeros((chains, _HEALTH_WINDOW))
        self.seen = np.zeros(chains, dtype=int)  # iterations recorded since the chain (re)started
        self.dim = dim
        self.t = 0

    def record(self, diverging: Tensor, accept: Tensor, potential: Tensor) -> None:
        """Add one iteration of every chain."""
        i = self.t % _HEALTH_WINDOW
        self.t += 1
        self.diverging[:, i] = diverging.numpy()
        self.accept[:, i] = accept.numpy()
        self.potential[:, i] = potential.detach().numpy()
        self.seen += 1

    def restarted(self, chain: int, like: int) -> None:
        """Chain ``chain`` now continues from chain ``like``'s state: copy its window."""
        for a in (self.diverging, self.accept, self.potential):
            a[chain] = a[like]
        self.seen[chain] = 0

    def stuck(self) -> np.ndarray:
        """Boolean ``(C,)``: chains that a full window shows to be stuck (see the module docstring)."""
        full = self.seen >= _HEALTH_WINDOW
        div = self.diverging.mean(1)
        acc = self.accept.mean(1)
        pot = self.potential.mean(1)
        med_acc = float(np.median(acc))
        bad_moves = (div > _MAX_DIVERGENT_SHARE) | (acc < _MIN_CHAIN_ACCEPT)
        bad_moves &= med_acc > _MEDIAN_ACCEPT_OK
        med_pot = float(np.median(pot))
        spread = 1.4826 * float(np.median(np.abs(pot - med_pot)))
        gap = _MAX_POTENTIAL_GAP * max(spread, math.sqrt(self.dim / 2.0))
        far = pot - med_pot > gap
        out: np.ndarray = full & (bad_moves | far)
        if out.sum() * 2 >= len(out):  # no healthy majority to restart from or judge against
            return np.zeros_like(out)
        return out


def _restart(
    potential: BatchedPotential,
    z: Tensor,
    pe: Tensor,
    grad: Tensor,
    stuck: np.ndarray,
    inv_mass: Tensor,
) -> tuple[Tensor, Tensor, Tensor, dict[int, int]]:
    """Move every ``stuck`` chain to a healthy chain's state plus a jitter of
    :data:`_RESTART_JITTER` times the mass matrix's scale; returns the new states, potentials,
    gradients and, per restarted chain, the chain it was copied from."""
    healthy = np.flatnonzero(~stuck)
    bad = np.flatnonzero(stuck)
    picks = healthy[torch.randint(len(healthy), (len(bad),)).numpy()]
    z = z.clone()
    noise = torch.randn(len(bad), z.shape[1], dtype=z.dtype) * inv_mass.sqrt() * _RESTART_JITTER
    z[bad] = z[picks] + noise
    pe_new, grad_new = potential.value_and_grad(z)
    rows = torch.as_tensor(bad)
    fine = torch.isfinite(pe_new[rows]) & torch.isfinite(grad_new[rows]).all(-1)
    # a jitter that lands on a point of zero density: copy the healthy state exactly
    z[rows[~fine]] = z[torch.as_tensor(picks)[~fine]]
    if not bool(fine.all()):
        pe_new, grad_new = potential.value_and_grad(z)
    keep = torch.as_tensor(~stuck)
    pe = torch.where(keep, pe, pe_new)
    grad = torch.where(keep[:, None], grad, grad_new)
    return z, pe, grad, {int(b): int(h) for b, h in zip(bad, picks, strict=True)}


def _log_T_floor(eps: float, adapted: bool) -> float:
    """log of T's floor: :data:`_MIN_STEPS` steps of ``eps``, and :data:`_MIN_WHITENED_T` once
    the mass matrix is adapted."""
    floor = _MIN_STEPS * eps
    return math.log(max(floor, _MIN_WHITENED_T) if adapted else floor)


def _poor_chains(stats: dict[str, np.ndarray]) -> list[int]:
    """Chains whose draws diverge more than :data:`_MAX_DIVERGENT_SHARE` of the time, or whose
    mean acceptance is below :data:`_MIN_CHAIN_ACCEPT` while the median chain's is fine."""
    if stats["diverging"].shape[1] == 0:
        return []
    div = stats["diverging"].mean(1)
    acc = stats["acceptance_rate"].mean(1)
    poor = (div > _MAX_DIVERGENT_SHARE) | ((acc < _MIN_CHAIN_ACCEPT) & (np.median(acc) > _MEDIAN_ACCEPT_OK))
    return [int(c) for c in np.flatnonzero(poor)]


def _leapfrog(
    potential: BatchedPotential, z: Tensor, p: Tensor, grad: Tensor, eps: float, steps: int, inv_mass: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``steps`` leapfrog steps of every chain; returns position, momentum, potential, gradient."""
    pe = torch.zeros(z.shape[0], dtype=z.dtype)
    p = p - 0.5 * eps * grad
    for i in range(steps):
        z = z + eps * inv_mass * p
        pe, grad = potential.value_and_grad(z)
        if i < steps - 1:
            p = p - eps * grad
    p = p - 0.5 * eps * grad
    return z, p, pe, grad


def run_chees(
    potential: BatchedPotential,
    init: Tensor,
    *,
    num_warmup: int,
    num_samples: int,
    target_accept_prob: float,
    max_steps: int,
    initial_step_size: float | None,
    generator_seed: int,
    progress: bool = False,
    keep_warmup: bool = False,
) -> ChEESResult:
    """Warm up and sample every chain of ``potential`` in lockstep from ``init`` ``(C, D)``.

    Returns a :class:`ChEESResult`; ``stats`` holds ``diverging``, ``step_size``, ``n_steps``,
    ``acceptance_rate``, ``lp`` (minus the potential of the state drawn), ``energy`` (the
    Hamiltonian of the state drawn, with its momentum) and ``trajectory_length`` per post-warm-up draw.
    ``keep_warmup=True`` keeps the warm-up iterations too, in ``extra["warmup_draws"]`` ``(C,
    num_warmup, D)`` and ``extra["warmup_stats"]``.
    """
    C, D = init.shape
    z = init.detach().clone()
    pe, grad = potential.value_and_grad(z)
    if not bool(torch.isfinite(pe).all()):
        bad = [c for c in range(C) if not bool(torch.isfinite(pe[c]))]
        raise ValueError(f"chain(s) {bad} start at a point of zero density; give other starting points")
    inv_mass = torch.ones(D, dtype=z.dtype)
    eps = (
        initial_step_size
        if initial_step_size is not None
        else _find_step_size(potential, z, pe, grad, inv_mass)
    )
    da = _DualAveraging(mu=math.log(10 * eps), target=target_accept_prob)
    # trajectory length: start at a few steps' worth, adapted on log T by Adam
    log_T = math.log(eps * 4)
    adam_v = 0.0
    adam_t = 0
    T_avg_log = log_T
    eps_avg_log = math.log(eps)
    buffer, ends = _stan_windows(num_warmup)
    windows = set(ends)
    window_draws: list[Tensor] = []
    window_healthy: list[Tensor] = []  # per window draw, the chains whose row counts
    adapted = False  # a mass matrix has been adapted: T's floor is in posterior units
    health = _ChainHealth(C, D)
    healthy = torch.ones(C, dtype=torch.bool)
    restarts = [0] * C
    unhealthy: list[int] = []
    quiet = max(_HEALTH_WINDOW // 2, num_warmup // 10)  # no restarts this close to the draws
    shift = float(np.random.default_rng(generator_seed).uniform())

    keep = torch.empty(C, num_samples, D, dtype=z.dtype)
    names = ("diverging", "step_size", "n_steps", "acceptance_rate", "lp", "energy", "trajectory_length")
    stats = {k: np.zeros((C, num_samples)) for k in names}
    warm_keep = torch.empty(C, num_warmup if keep_warmup else 0, D, dtype=z.dtype)
    warm_stats = {k: np.zeros((C, warm_keep.shape[1])) for k in names}
    total = num_warmup + num_samples
    bar = tqdm(range(total), disable=not progress, desc="chees")
    n_warm_div = 0
    for it in bar:
        warm = it < num_warmup
        T = math.exp(log_T) if warm else math.exp(T_avg_log)
        step = eps if warm else math.exp(eps_avg_log)
        jitter = (_van_der_corput(it + 1) + shift) % 1.0 or 0.5
        n_steps = int(min(max_steps, max(1, math.ceil(jitter * T / step))))
        p = torch.randn(C, D, dtype=z.dtype) / inv_mass.sqrt()
        kinetic = 0.5 * (p * p * inv_mass).sum(-1)
        h0 = pe + kinetic
        z1, p1, pe1, grad1 = _leapfrog(potential, z, p, grad, step, n_steps, inv_mass)
        h1 = pe1 + 0.5 * (p1 * p1 * inv_mass).sum(-1)
        delta = h1 - h0
        finite = torch.isfinite(delta) & torch.isfinite(grad1).all(-1)
        diverging = ~finite | (delta > _MAX_ENERGY_ERROR)
        accept_prob = torch.where(diverging, torch.zeros_like(delta), torch.exp(torch.clamp(-delta, max=0.0)))
        accepted = torch.rand(C, dtype=z.dtype) < accept_prob
        z_prev = z
        z = torch.where(accepted[:, None], z1, z)
        pe = torch.where(accepted, pe1, pe)
        grad = torch.where(accepted[:, None], grad1, grad)
        if keep_warmup or not warm:
            out, out_stats, s = (warm_keep, warm_stats, it) if warm else (keep, stats, it - num_warmup)
            out[:, s] = z
            out_stats["diverging"][:, s] = diverging.numpy()
            out_stats["step_size"][:, s] = step
            out_stats["n_steps"][:, s] = n_steps
            out_stats["acceptance_rate"][:, s] = accept_prob.numpy()
            out_stats["lp"][:, s] = (-pe).numpy()
            out_stats["energy"][:, s] = torch.where(accepted, h1, h0).numpy()
            out_stats["trajectory_length"][:, s] = T
        if warm:
            n_warm_div += int(diverging.sum())
            health.record(diverging, accept_prob, pe)
            ok = ~diverging & healthy
            # step size: the healthy chains' mean acceptance probability (divergent ones count as 0)
            eps = da.update(float(accept_prob[healthy].mean()))
            w = (it + 1) ** (-_AVERAGE_DECAY)
            eps_avg_log = w * math.log(eps) + (1 - w) * eps_avg_log
            # trajectory length: ChEES gradient with respect to log T, over the healthy chains
            if bool(ok.any()):
                weights = accept_prob * ok
                mean_new = (weights[:, None] * torch.where(ok[:, None], z1, 0.0)).sum(
                    0
                ) / weights.sum().clamp(min=1e-10)
                mean_old = z_prev[healthy].mean(0)
                new_c = torch.where(ok[:, None], z1 - mean_new, 0.0)
                old_c = torch.where(ok[:, None], z_prev - mean_old, 0.0)
                velocity = torch.where(ok[:, None], inv_mass * p1, 0.0)
                g_chain = jitter * T * ((new_c**2).sum(-1) - (old_c**2).sum(-1)) * (new_c * velocity).sum(-1)
                g = float((weights * g_chain).sum() / weights.sum().clamp(min=1e-10))
                if math.isfinite(g):
                    adam_t += 1
                    adam_v = _ADAM_BETA2 * adam_v + (1 - _ADAM_BETA2) * g * g
                    v_hat = adam_v / (1 - _ADAM_BETA2**adam_t)
                    log_T += _ADAM_RATE * g / (math.sqrt(v_hat) + 1e-8)
            log_T = min(max(log_T, _log_T_floor(eps, adapted)), math.log(max_steps * eps))
            T_avg_log = w * log_T + (1 - w) * T_avg_log
            window_draws.append(z.clone())
            window_healthy.append(healthy.clone())
            # stuck chains: out of the adaptation while the window judges them, then restarted
            stuck = health.stuck()
            healthy = torch.as_tensor(~stuck)
            if stuck.any() and it + 1 < num_warmup - quiet:
                z, pe, grad, copied = _restart(potential, z, pe, grad, stuck, inv_mass)
                for chain, like in copied.items():
                    restarts[chain] += 1
                    health.restarted(chain, like)
                    for mask in window_healthy:  # its stuck draws leave the mass-matrix window
                        mask[chain] = False
                healthy = torch.ones(C, dtype=torch.bool)
                adam_v, adam_t = 0.0, 0  # the gradients it fed Adam are forgotten
            if it + 1 == buffer:  # the initial buffer only finds the typical set: not used
                window_draws, window_healthy = [], []
            if it + 1 in windows:
                rows = torch.cat(window_draws)[torch.cat(window_healthy)]
                n = rows.shape[0]
                var = rows.var(0) if n > 1 else torch.ones(D, dtype=z.dtype)
                new_inv = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
                inv_mass = new_inv.to(z.dtype)
                adapted = True
                window_draws, window_healthy = [], []
                eps = _find_step_size(potential, z, pe, grad, inv_mass, healthy)
                da = _DualAveraging(mu=math.log(10 * eps), target=target_accept_prob)
                eps_avg_log = math.log(eps)
            if it + 1 == num_warmup:
                eps_avg_log = da.log_x_bar if da.t else math.log(eps)
                T_avg_log = max(T_avg_log, _log_T_floor(math.exp(eps_avg_log), adapted))
                unhealthy = [int(c) for c in np.flatnonzero(health.stuck())]
    bar.close()
    unhealthy = sorted(set(unhealthy) | set(_poor_chains(stats)))
    if unhealthy:
        warnings.warn(
            f"ChEES chain(s) {unhealthy} are unhealthy after warm-up (stuck, or diverging or "
            "rejecting far more often than the other chains; restarts per chain "
            f"{restarts}); raise warmup_steps or target_accept_prob, or give other starting values",
            ConvergenceWarning,
            stacklevel=3,
        )
    return ChEESResult(
        draws=keep,
        stats=stats,
        step_size=math.exp(eps_avg_log),
        trajectory_length=math.exp(T_avg_log),
        inverse_mass=inv_mass,
        extra={"warmup_divergences": n_warm_div, "restarts": restarts, "unhealthy_chains": unhealthy}
        | ({"warmup_draws": warm_keep, "warmup_stats": warm_stats} if keep_warmup else {}),
    )
