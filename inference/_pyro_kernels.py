"""Pyro's NUTS and HMC kernels, recording each draw's sampler statistics for ArviZ
(:mod:`probgen.inference.mcmc`, ``kernel="pyro_nuts"`` and ``"hmc"``).

How each statistic is obtained, through Pyro's public API where it offers one:

- ``diverging``: the kernel's own ``diagnostics()["divergences"]`` (post-warmup draw indices).
- ``step_size``: the kernel's ``step_size`` property.
- ``n_steps`` (leapfrog steps) and ``tree_depth``: the kernel runs on the potential function
  built by ``pyro.infer.mcmc.util.initialize_model`` (Pyro's documented ``potential_fn`` route),
  wrapped to count its gradient evaluations: one per leapfrog step.  NUTS doubles its trajectory
  until it stops; every doubling but the last is complete, so ``n`` steps span
  ``2**(d-1) <= n <= 2**d - 1`` and the depth is ``d = n.bit_length()`` (Stan's ``treedepth__``).
- ``lp``: minus the potential energy (log joint density in the unconstrained space, Jacobian
  included, discrete latents summed out) of the state each draw lands on, remembered by the
  same wrapper when it evaluated that state.
- ``energy``: the Hamiltonian of the draw, its potential energy plus the kinetic energy of the
  momentum the trajectory reached it with (the draw's own momentum, as ``numpyro`` and Stan
  record it).  The kernels are Pyro's NUTS and HMC with three methods extended, each calling
  Pyro's own: ``_sample_r`` keeps the momentum drawn at the trajectory's start, NUTS's
  ``_build_basetree`` the momentum of every state a leapfrog step reaches (by the identity of
  the state's tensors, as for ``lp``), and HMC's ``_kinetic_energy`` the momenta it is given
  (the start's, then the proposal's).  A draw that stays where its trajectory started has the
  start's momentum.
- ``acceptance_rate``: the mean Metropolis acceptance probability of the draw's trajectory.
  Pyro keeps only its running mean, the private ``_mean_accept_prob``, which is read (never
  patched) after each draw; this attribute and the three methods above are the private parts of
  Pyro used, so ``pyproject.toml`` bounds ``pyro-ppl`` below its next minor release.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.infer import HMC, NUTS

__all__ = ["CountingPotential", "DrawStats", "RecordingHMC", "RecordingNUTS", "state_key"]

_State = dict[str, torch.Tensor]


def state_key(z: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    return tuple(id(z[k]) for k in sorted(z))


class CountingPotential:
    """A potential function that counts its evaluations and remembers the energies it returned.

    HMC and NUTS evaluate the potential (with its gradient) once per leapfrog step, so the count
    between two draws is the draw's number of leapfrog steps, and the state a draw lands on is
    one of the states evaluated while its trajectory was built (or the previous draw's state).
    """

    def __init__(self, fn: Callable[[_State], torch.Tensor]) -> None:
        self.fn = fn
        self.calls = 0
        # state key -> (the state's tensors, kept alive so ids stay unique; potential energy)
        self.seen: dict[tuple[int, ...], tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def __call__(self, z: _State) -> torch.Tensor:
        pe = self.fn(z)
        self.calls += 1
        self.seen[state_key(z)] = (tuple(z.values()), pe.detach())
        return pe


def _kinetic(kernel: Any, r_unscaled: Mapping[str, torch.Tensor] | None) -> float:
    """Kinetic energy of an (unscaled) momentum, by Pyro's own formula."""
    if not r_unscaled:
        return float("nan")
    return float(HMC._kinetic_energy(kernel, r_unscaled))


class RecordingNUTS(NUTS):
    """Pyro's NUTS, remembering the momentum of each state its last trajectory visited."""

    def sample(self, params: _State) -> _State:
        # state key -> (the state's tensors, kept alive so ids stay unique; momentum unscaled, as given)
        self.visited: dict[tuple[int, ...], tuple[tuple[torch.Tensor, ...], _State, _State]] = {}
        self.start_momentum: tuple[_State, _State] | None = None
        return super().sample(params)

    def _sample_r(self, name: str) -> tuple[_State, _State]:
        r, r_unscaled = super()._sample_r(name)
        self.start_momentum = (r_unscaled, r)
        return r, r_unscaled

    def _build_basetree(self, *args: Any) -> Any:
        tree = super()._build_basetree(*args)
        z = tree.z_proposal  # the one state this leaf reached, and its momentum
        self.visited[state_key(z)] = (tuple(z.values()), tree.r_sum, tree.r_right)
        return tree

    def momentum(self, params: _State, moved: bool, *, scaled: bool = False) -> _State | None:
        """The momentum the last trajectory reached ``params`` with (``scaled``: as the kernel
        holds it, whose kinetic energy is ``r M^-1 r / 2``; else with ``M^-1/2`` applied)."""
        hit = self.visited.get(state_key(params)) if moved else None
        pair = (hit[1], hit[2]) if hit is not None else self.start_momentum
        if pair is None:
            return None
        return pair[1] if scaled else pair[0]


class RecordingHMC(HMC):
    """Pyro's HMC, remembering the momenta of its last trajectory (start, then proposal)."""

    def sample(self, params: _State) -> _State:
        self.momenta: list[_State] = []
        return super().sample(params)

    def _kinetic_energy(self, r_unscaled: _State) -> Any:
        if hasattr(self, "momenta"):
            self.momenta.append(r_unscaled)
        return super()._kinetic_energy(r_unscaled)

    def momentum(self, params: _State, moved: bool) -> _State | None:
        """The momentum (unscaled) the last trajectory reached ``params`` with."""
        momenta = getattr(self, "momenta", [])
        if not momenta:
            return None
        return momenta[1] if moved and len(momenta) > 1 else momenta[0]


class DrawStats:
    """MCMC ``hook_fn``: one row of sampler statistics per post-warmup draw."""

    def __init__(self, potential: CountingPotential, nuts: bool) -> None:
        self.potential = potential
        self.nuts = nuts
        self.rows: list[dict[str, float]] = []
        self._calls = 0
        self._state: tuple[tuple[int, ...], tuple[torch.Tensor, ...], float] | None = None
        self._prev_mean_accept = 0.0

    def _potential_energy(self, params: _State) -> tuple[float, bool]:
        """The draw's potential energy, and whether the chain moved from the previous draw."""
        key = state_key(params)
        moved = self._state is None or self._state[0] != key
        if key in self.potential.seen:
            pe = float(self.potential.seen[key][1])
        elif not moved and self._state is not None:  # the chain did not move
            pe = self._state[2]
        else:  # not evaluated by the sampler (the initial state): evaluate, uncounted
            with torch.no_grad():
                pe = float(self.potential.fn(params))
        self._state = (key, tuple(params.values()), pe)
        self.potential.seen.clear()
        return pe, moved

    def __call__(self, kernel: Any, params: _State, stage: str, i: int) -> None:
        n_steps = self.potential.calls - self._calls
        pe, moved = self._potential_energy(params)
        self._calls = self.potential.calls
        if not stage.startswith("Sample"):
            return
        momentum = kernel.momentum(params, moved) if hasattr(kernel, "momentum") else None
        n = i + 1  # Pyro restarts the running mean at the first post-warmup draw
        mean_accept = float(kernel._mean_accept_prob)  # private: see the module docstring
        accept = mean_accept * n - self._prev_mean_accept * (n - 1)
        self._prev_mean_accept = mean_accept
        divergences = kernel.diagnostics()["divergences"]
        row = {
            "diverging": float(bool(divergences) and divergences[-1] == i),
            "step_size": float(kernel.step_size),
            "n_steps": float(n_steps),
            "acceptance_rate": float(min(max(accept, 0.0), 1.0)),
            "lp": -pe,
            "energy": pe + _kinetic(kernel, momentum),
        }
        if self.nuts:
            row["tree_depth"] = float(n_steps.bit_length())
        self.rows.append(row)
