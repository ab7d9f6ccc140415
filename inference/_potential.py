"""The potential of every chain at once, for the samplers that move chains in lockstep.

The model is traced once with the chains as an extra plate left of its own plates, every
continuous site conditioned on a ``(chains, ...)`` value; discrete latents are summed out by tensor
variable elimination down to the chains plate (``pyro.ops.contract``).  The result is checked
against Pyro's own one-state potential at every chain's starting point before sampling starts, so
a model that does not broadcast over the extra dim is caught (never a silent wrong answer) and
evaluated instead by ``torch.func.vmap`` of a one-state trace over the chains (the model sees one
state, as written; checked the same way), or, where vmap cannot follow the model either, chain by
chain.  :attr:`BatchedPotential.mode` says which: ``"batched"``, ``"vmap"`` or ``"per_chain"``.  The potential and its gradient are traced together to one static
graph of ATen operations (``make_fx``) and compiled where the trace can be followed; the compiled
function is checked against the uncompiled one before use.  ``run_nuts`` (probgen's NUTS) and
``run_chees`` (ChEES-HMC) both evaluate models through :class:`BatchedPotential`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.func import functionalize
from torch.fx.experimental.proxy_tensor import make_fx

from probgen.inference._graph_passes import _best_time, simplify
from probgen.inference._inductor import CPP_WRAPPER_NODES, _compiled_marker, _inductor_compile

__all__ = ["BatchedPotential"]

_CHAINS_PLATE = "_pg_chains"
#: What tracing or running a compiled graph raises on a model it cannot follow (the eager
#: potential is used then, so the choice never changes a result).
_TRACE_ERRORS = (RuntimeError, TypeError, ValueError, NotImplementedError, AttributeError, IndexError)
#: Inductor's compile time, estimated before compiling as fixed seconds plus seconds per node of the
#: simplified graph: about the first compile of a fresh process with an empty inductor cache on one
#: CPU thread, with its Python wrapper (graphs of 87, 93 and 234 nodes took 1.7, 1.8 and 5.1 s).
_INDUCTOR_FIXED_S, _INDUCTOR_NODE_S = 0.6, 0.02
#: The estimate instead when inductor compiled the same graph before, so that its on-disk graph cache
#: holds the kernels (0.4 to 0.5 s measured on logistic regression).
_INDUCTOR_CACHED_S = 0.6
#: The share of a call's time inductor is expected to save (measured 0.8 to 0.93 on the benchmark
#: models: eight schools 108 -> 7 us, logistic regression 147 -> 20, the mixture 607 -> 120).
_INDUCTOR_SAVING = 0.7
#: Inductor's C++ wrapper (on graphs of :data:`~._inductor.CPP_WRAPPER_NODES`): its extra compile
#: seconds, and the seconds it is expected to save a call.
_CPP_WRAPPER_EXTRA_S, _CPP_WRAPPER_SAVING_S = 1.0, 1e-5
#: Timed calls of the potential behind the decision to compile with inductor.
_TIMED_CALLS = 10


def _sum_to_chains(lp: Tensor, nesting: int, num_chains: int) -> Tensor:
    """A site's log-prob summed over every dim but the chains dim, which sits at -(nesting + 1)."""
    if lp.dim() < nesting + 1:
        lp = lp.reshape((1,) * (nesting + 1 - lp.dim()) + tuple(lp.shape))
    lp = lp.movedim(lp.dim() - nesting - 1, 0)
    return lp.reshape(lp.shape[0], -1).sum(-1).expand(num_chains)


class BatchedPotential:
    """The potential energy of ``C`` unconstrained states at once, ``(C, D) -> (C,)``.

    Parameters
    ----------
    model_fn : callable
        The Pyro model (with ``config_enumerate`` applied when it has discrete latents).
    data : object
        Its argument.
    transforms : dict
        Pyro's constrained-to-unconstrained transforms by site (``initialize_model``'s).
    template : dict of str to Tensor
        One unconstrained state (its shapes and dtype), sites in sorted order.
    num_chains : int
    max_plate_nesting : int
    enumerate_discrete : bool
        Sum discrete latents out (tensor variable elimination).

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> def m(data):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)
    >>> from pyro.distributions.transforms import identity_transform
    >>> pot = BatchedPotential(m, torch.tensor(0.0), {"mu": identity_transform}, {"mu": torch.zeros(())}, 2, 0)
    >>> pot(torch.zeros(2, 1)).shape
    torch.Size([2])
    """

    def __init__(
        self,
        model_fn: Callable[..., Any],
        data: Any,
        transforms: Mapping[str, Any],
        template: Mapping[str, Tensor],
        num_chains: int,
        max_plate_nesting: int,
        enumerate_discrete: bool = False,
        one_state: Callable[[dict[str, Tensor]], Tensor] | None = None,
    ) -> None:
        self.model_fn = model_fn
        self.one_state = one_state
        self.mode = "batched"
        self.data = data
        self.transforms = dict(transforms)
        self.names = sorted(template)
        self.shapes = {k: tuple(template[k].shape) for k in self.names}
        self.sizes = [max(1, math.prod(self.shapes[k])) for k in self.names]
        self.dim = sum(self.sizes)
        self.dtype = next(iter(template.values())).dtype if template else torch.get_default_dtype()
        self.num_chains = num_chains
        self.nesting = max_plate_nesting
        self.enumerate_discrete = enumerate_discrete
        # the constrained sites' batch and event shapes, from one plain trace
        constrained = {k: self.transforms[k].inv(template[k]) for k in self.names}
        with poutine.block(), torch.no_grad():
            trace: Any = poutine.trace(poutine.condition(model_fn, data=constrained)).get_trace(data)
        self.site_shapes = {
            k: (tuple(trace.nodes[k]["fn"].batch_shape), tuple(trace.nodes[k]["fn"].event_shape))
            for k in self.names
        }
        self._compiled: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
        self._graph: Any = None  # the traced value-and-gradient graph (make_fx)
        self._rtol = 1e-5
        #: What runs the potential: None (eager), "trace" (TorchScript) or "inductor".
        self.compiler: str | None = None
        #: Why inductor was or was not used (an estimate in seconds), for ``fit.extras``.
        self.compiler_note: str | None = None
        #: Whether :meth:`inductor` compiled (or tried to and failed): a second call does nothing.
        self.inductor_tried = False

    # ------------------------------------------------------------------ layout
    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``(C, D)`` -> unconstrained ``(C, *shape)`` per site."""
        out = {}
        for k, piece in zip(self.names, flat.split(self.sizes, dim=-1), strict=True):
            out[k] = piece.reshape(flat.shape[:-1] + self.shapes[k])
        return out

    def unflatten_rows(self, flat: Tensor) -> list[dict[str, Tensor]]:
        """``(C, D)`` -> one unconstrained state per row."""
        per_site = self.unflatten(flat)
        return [{k: v[c] for k, v in per_site.items()} for c in range(flat.shape[0])]

    def flatten(self, states: Mapping[str, Tensor]) -> Tensor:
        """Unconstrained ``(C, *shape)`` per site -> ``(C, D)``."""
        C = next(iter(states.values())).shape[0]
        return torch.cat([states[k].reshape(C, -1) for k in self.names], -1).to(self.dtype)

    def constrained(self, flat: Tensor) -> dict[str, Tensor]:
        """``(C, D)`` -> constrained site values ``(C, *value_shape)``."""
        return {k: self.transforms[k].inv(v) for k, v in self.unflatten(flat).items()}

    @property
    def vectorised(self) -> bool:
        """Whether every chain is evaluated in one trace of the model (``mode == "batched"``)."""
        return self.mode == "batched"

    # ------------------------------------------------------------------ evaluation
    def per_chain(self) -> None:
        """Evaluate the chains one at a time with the one-state potential (models that do not
        broadcast over the chains dim); compiled, the loop is unrolled into one graph."""
        if self.one_state is None:
            raise ValueError("per-chain evaluation needs the one-state potential (one_state=...)")
        self.mode = "per_chain"
        self._compiled = self._graph = self.compiler = None

    def use_vmap(self, points: list[Tensor], rtol: float) -> bool:
        """Evaluate the chains by ``torch.func.vmap`` of a one-state trace when it agrees with the
        one-state potential at every row of ``points``; False (mode unchanged) otherwise.

        The model is traced on one state at a time, as it is written, so a model that fails or
        changes its answer with the chains as an extra batch dim (``x @ coef``, a sum over every
        dim) is still evaluated in one call; a model that branches on values cannot be followed
        by vmap and raises, which this method reports as False.
        """
        mode, compiled, graph, compiler = self.mode, self._compiled, self._graph, self.compiler
        self.mode, self._compiled, self._graph, self.compiler = "vmap", None, None, None
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                agrees = all(self.agrees_at(p, self.eager(p), rtol) for p in points)
        except _TRACE_ERRORS:
            agrees = False
        if not agrees:
            self.mode, self._compiled, self._graph, self.compiler = mode, compiled, graph, compiler
        return agrees

    def eager(self, flat: Tensor) -> Tensor:
        """The potential without compilation."""
        if self.mode == "per_chain":
            assert self.one_state is not None
            return torch.stack([self.one_state(z) for z in self.unflatten_rows(flat)]).to(flat.dtype)
        if self.mode == "vmap":
            with pyro.validation_enabled(False):  # validation branches on values: vmap cannot
                return torch.func.vmap(self.single)(flat)
        return self.batched(flat)

    def single(self, flat: Tensor) -> Tensor:
        """The potential of one unconstrained state ``(D,) -> ()``, traced as the model is written
        (no chains plate); the function :meth:`use_vmap` maps over the chains."""
        values: dict[str, Tensor] = {}
        log_jac = flat.new_zeros(())
        for k, piece in zip(self.names, flat.split(self.sizes), strict=True):
            u = piece.reshape(self.shapes[k])
            t = self.transforms[k]
            values[k] = x = t.inv(u)
            log_jac = log_jac + t.log_abs_det_jacobian(x, u).sum()
        conditioned = poutine.condition(self.model_fn, data=values)
        if self.enumerate_discrete:
            log_joint = self._enumerated(conditioned, None)
        else:
            with poutine.block():
                trace: Any = poutine.trace(conditioned).get_trace(self.data)
            log_joint = flat.new_zeros(())
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                lp = site["fn"].log_prob(site["value"])
                log_joint = log_joint + scale_and_mask(lp, site["scale"], site["mask"]).sum()
        return -(log_joint - log_jac)

    def batched(self, flat: Tensor) -> Tensor:
        """The potential of every chain in one trace of the model, the chains as an outer plate."""
        C, n = flat.shape[0], self.nesting
        unconstrained = self.unflatten(flat)
        values: dict[str, Tensor] = {}
        log_jac = flat.new_zeros(C)
        for k, u in unconstrained.items():
            t = self.transforms[k]
            x = t.inv(u)
            jac = t.log_abs_det_jacobian(x, u)
            log_jac = log_jac + jac.reshape(C, -1).sum(-1)
            batch, event = self.site_shapes[k]
            values[k] = x.reshape((C,) + (1,) * (n - len(batch)) + batch + event)
        conditioned = poutine.condition(self.model_fn, data=values)

        def chains(d: Any) -> Any:
            with pyro.plate(_CHAINS_PLATE, C, dim=-(n + 1)):
                return conditioned(d)

        if self.enumerate_discrete:
            log_joint = self._enumerated(chains, C)
        else:
            with poutine.block():
                trace: Any = poutine.trace(chains).get_trace(self.data)
            log_joint = flat.new_zeros(C)
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                lp = site["fn"].log_prob(site["value"])
                lp = scale_and_mask(lp, site["scale"], site["mask"])
                log_joint = log_joint + _sum_to_chains(lp, n, C)
        return -(log_joint - log_jac)

    def _enumerated(self, chains: Callable[..., Any], C: int | None) -> Tensor:
        """Discrete latents summed out: down to the chains plate ``(C,)``, or (``C`` None, a
        one-state model without the chains plate) to a scalar."""
        n = self.nesting
        enumerated = poutine.enum(chains, first_available_dim=-(n + 2 if C is not None else n + 1))
        with poutine.block():
            trace: Any = poutine.trace(enumerated).get_trace(self.data)
        trace.compute_log_prob()
        trace.pack_tensors()
        tree: OrderedDict[frozenset[str], list[Tensor]] = OrderedDict()
        plate_symbols = set(trace.plate_to_symbol.values())
        sum_dims: set[str] = set()
        dim_to_size: dict[str, int] = {}
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if not site["is_observed"] and site["infer"].get("_enumerate_dim") is None:
                if site["name"] not in self.transforms:
                    raise ValueError(f"site {site['name']!r} is a latent that cannot be enumerated")
            term = site["packed"]["log_prob"]
            ordinal = frozenset(
                trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized
            )
            tree.setdefault(ordinal, []).append(term)
            sum_dims.update(set(term._pyro_dims) - plate_symbols)
            dim_to_size.update(zip(term._pyro_dims, term.shape, strict=True))
            for f in site["cond_indep_stack"]:
                if f.vectorized:
                    dim_to_size[trace.plate_to_symbol[f.name]] = f.size
        target = frozenset({trace.plate_to_symbol[_CHAINS_PLATE]}) if C is not None else frozenset()
        result = _sum_out_locals(tree, sum_dims, target, dim_to_size)
        if result is None:
            result = contract_to_tensor(
                tree, sum_dims, target_ordinal=target, ring=LogRing(dim_to_size=dim_to_size)
            )
        result = packed.unpack(result, trace.symbol_to_dim)
        return _sum_to_chains(result, n, C) if C is not None else result.sum()

    def __call__(self, flat: Tensor) -> Tensor:
        if self._compiled is not None:
            return self._compiled(flat)[1]
        return self.eager(flat)

    def value_and_grad(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """Potential ``(C,)`` and its gradient ``(C, D)`` (each chain's own: chains are independent)."""
        if self._compiled is not None:
            grad, pe = self._compiled(flat.detach())
            return pe, grad
        return self._eager_value_and_grad(flat)

    def _eager_value_and_grad(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = flat.detach().requires_grad_()
            pe = self.eager(z)
            (grad,) = torch.autograd.grad(pe.sum(), z)
        return pe.detach(), grad

    def compile(self, points: list[Tensor], rtol: float) -> bool:
        """Compile the potential and its gradient into one static graph; False (eager kept) when unsafe.

        The value-and-gradient function is traced to ATen operations with
        ``torch.fx.experimental.proxy_tensor.make_fx`` (forward and backward in one graph, Pyro's
        tracing cost gone), retraced functionalised (``torch.func.functionalize``: no in-place
        operations), shrunk by :func:`~probgen.inference._graph_passes.simplify` (constants
        folded, identities and repeats removed: eight schools' 200 nodes become 92) and compiled
        with ``torch.jit.trace``.  A static graph
        freezes any Python control flow on tensor values, so the compiled function is kept only
        when it reproduces the eager potential and gradient at every row of ``points``; callers
        check it again on the states the chains visit (see :meth:`agrees_at`).
        """

        def value_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
            pe, grad = self._eager_value_and_grad(z)
            return grad, pe

        try:
            with warnings.catch_warnings(), pyro.validation_enabled(False):
                warnings.simplefilter("ignore")  # the tracers' notices; the checks below decide
                traced = make_fx(value_and_grad)(points[0])
                # retraced without in-place operations, so that the passes may move every node
                pure = make_fx(functionalize(traced, remove="mutations"))(points[0])
                graph = simplify(pure, points[0])
                compiled = torch.jit.trace(graph, (points[0],), check_trace=False)
        except _TRACE_ERRORS:  # the tracers cannot follow this model: run it uncompiled
            return False
        for p in points:
            want_pe, want_grad = self._eager_value_and_grad(p)
            try:
                got_grad, got_pe = compiled(p)
            except _TRACE_ERRORS:
                return False
            if not (_close(got_pe, want_pe, rtol) and _close(got_grad, want_grad, rtol)):
                return False
        self._compiled, self._graph, self._rtol, self.compiler = compiled, graph, rtol, "trace"
        return True

    def inductor(self, points: list[Tensor], expected_calls: float | None = None) -> bool:
        """Compile the traced graph with inductor (:func:`_inductor_compile`) when it is expected to pay.

        Inductor fuses the graph's operations into generated C++ (0.8 to 0.93 of a call's time
        saved on the benchmark models) but takes seconds to compile, so with ``expected_calls``
        given it compiles only when ``expected_calls * 0.7 * t_call`` exceeds its estimated
        compile time ``0.6 s + 0.02 s`` per graph node, 1 s more with the C++ wrapper (0.6 s for
        a graph inductor compiled before, in any process: its on-disk cache holds it), ``t_call``
        timed on a few calls now (:attr:`compiler_note` gives the figures); ``None`` compiles
        regardless.  The C++ wrapper is chosen on graphs of 200 to 1,000 nodes when the calls
        expected save more than its extra compile at 10 us a call.  The compiled
        function is kept only when it reproduces the eager potential and gradient at every row
        of ``points`` (as :meth:`compile` checks) and is faster than the traced one.

        Parameters
        ----------
        points : list of Tensor, each (C, D)
            States to check the compiled function at.
        expected_calls : float or None, default None
            Evaluations still to come.

        Returns
        -------
        bool
            Whether inductor's function now evaluates the potential.
        """
        if self._graph is None or self._compiled is None:
            self.compiler_note = "inductor not tried: no traced graph"
            return False
        if self.inductor_tried:
            return self.compiler == "inductor"
        traced = self._compiled
        before = self._time_call(traced, points[0])
        marker = _compiled_marker(self._graph, points[0])
        nodes = len(self._graph.graph.nodes)
        # the C++ wrapper where its saving a call pays for its extra compile (or the calls are unknown)
        cpp = nodes in CPP_WRAPPER_NODES and (
            expected_calls is None or expected_calls * _CPP_WRAPPER_SAVING_S > _CPP_WRAPPER_EXTRA_S
        )
        if expected_calls is not None:
            cached = marker is not None and marker.exists()
            estimate = (
                _INDUCTOR_CACHED_S
                if cached
                else _INDUCTOR_FIXED_S + _INDUCTOR_NODE_S * nodes + cpp * _CPP_WRAPPER_EXTRA_S
            )
            saving = expected_calls * _INDUCTOR_SAVING * before
            self.compiler_note = (
                f"inductor {'tried' if saving > estimate else 'not tried'}: {expected_calls:.0f} calls "
                f"expected x {1e6 * before:.0f} us x {_INDUCTOR_SAVING} saved = {saving:.1f} s against "
                f"{estimate:.1f} s of compiling (estimated{', compiled before' if cached else ''})"
            )
            if saving <= estimate:
                return False
        self.inductor_tried = True
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled, how = _inductor_compile(self._graph, points[0], cpp_wrapper=cpp)
                for p in points:
                    want_pe, want_grad = self._eager_value_and_grad(p)
                    got_grad, got_pe = compiled(p)
                    if not (_close(got_pe, want_pe, self._rtol) and _close(got_grad, want_grad, self._rtol)):
                        self.compiler_note = f"{self.compiler_note or 'inductor'}; it disagreed: traced kept"
                        return False
        except Exception as e:  # noqa: BLE001  inductor fails in many types (no C compiler, an op it lacks)
            self.compiler_note = (
                f"{self.compiler_note or 'inductor'}; it failed ({type(e).__name__}): traced kept"
            )
            return False
        took = time.perf_counter() - start
        after = self._time_call(compiled, points[0])
        self.compiler_note = (
            f"{self.compiler_note or 'inductor'}; compiled ({how}) and checked in {took:.1f} s; "
            f"{1e6 * before:.0f} -> {1e6 * after:.0f} us a call"
        )
        if after >= before:
            return False
        self._compiled, self.compiler = compiled, "inductor"
        if marker is not None:
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:  # a read-only cache: only the next estimate is the worse for it
                pass
        return True

    @staticmethod
    def _time_call(fn: Callable[[Tensor], Any], z: Tensor) -> float:
        """Seconds per call of ``fn`` at ``z``, the least of a few timed calls (after one warm call)."""
        return _best_time(fn, z, repeats=_TIMED_CALLS, number=1)

    def agrees_at(self, flat: Tensor, potential: Tensor, rtol: float) -> bool:
        """Whether the one-state potential at each row of ``flat`` ``(C, D)`` equals ``potential``."""
        if self.one_state is None:
            raise ValueError("agrees_at needs the one-state potential (one_state=...)")
        with torch.no_grad():
            truth = torch.stack([self.one_state(z) for z in self.unflatten_rows(flat)]).to(self.dtype)
        return _close(potential.to(self.dtype), truth, rtol)


def _sum_out_locals(
    tree: Mapping[frozenset[str], list[Tensor]],
    sum_dims: set[str],
    target: frozenset[str],
    dim_to_size: Mapping[str, int],
) -> Tensor | None:
    """The log joint with every enumerated variable summed out, down to the ``target`` plates,
    when no log-probability term holds two enumerated variables (a mixture's labels, one discrete
    site per plate); None otherwise (a Markov chain: :func:`pyro.ops.contract.contract_to_tensor`).

    Each variable ``d`` is summed out on its own: the terms holding it are reduced over the
    plates nested below its own site's (a product of likelihoods), added, and
    ``logsumexp``-ed over ``d``; then every term is reduced over its plates but the target's.
    The same numbers as Pyro's contraction, which computes the sum as an exp-matrix-product-log:
    its batched ``bmm`` over every (chain, item) pair and its components-last layout cost several
    times the ``logsumexp``, compiled or not.  Packed tensors as Pyro's contraction takes them
    (``_pyro_dims`` names each dim).
    """
    terms = [(o, t, str(getattr(t, "_pyro_dims", ""))) for o, ts in tree.items() for t in ts]
    if len(target) > 1 or any(len(set(names) & sum_dims) > 1 for _, _, names in terms):
        return None
    parts: list[Tensor] = []
    for d in sorted(sum_dims):
        group = [(o, t, names) for o, t, names in terms if d in names]
        if not group:
            continue
        own = frozenset.intersection(*(o for o, _, _ in group))
        # the sum dim first, then the site's plates, the largest last (contiguous for a compiler)
        dims = d + "".join(sorted(own, key=lambda p: (dim_to_size[p], p)))
        xs = []
        for o, t, names in group:
            x, left = _plate_sum(t, names, o - own, dim_to_size)
            x = x.permute([left.index(s) for s in dims if s in left])
            xs.append(x.reshape([dim_to_size[s] if s in left else 1 for s in dims]))
        # a term laid out in the order of ``dims`` first: the sum takes the layout of its first
        # operand, and a broadcast term (a Categorical's log weights) laid out components-last
        # would make the sum, the logsumexp and the gradient strided (about twice as slow)
        xs.sort(key=lambda x: not x.is_contiguous())
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        lse = total.logsumexp(0)
        # a plate no term had a dim for is size one here, and counts its size
        present = "".join(s for s, n in zip(dims[1:], lse.shape, strict=True) if n > 1)
        lse = lse.reshape([dim_to_size[s] for s in present])
        x, _ = _plate_sum(lse, present, own - target, dim_to_size)
        parts.append(x.reshape(-1))
    for o, t, names in terms:
        if not set(names) & sum_dims:
            x, _ = _plate_sum(t, names, o - target, dim_to_size)
            parts.append(x.reshape(-1))
    result = parts[0]
    for part in parts[1:]:
        result = result + part
    result._pyro_dims = "".join(sorted(target))  # type: ignore[attr-defined]
    return result


def _plate_sum(
    x: Tensor, names: str, plates: frozenset[str], dim_to_size: Mapping[str, int]
) -> tuple[Tensor, str]:
    """``x`` (its dims named by ``names``) summed over the dims of ``plates``, and the names
    left; a plate ``x`` has no dim for (packing drops size-one dims) multiplies it by the plate's
    size, as Pyro's contraction counts it."""
    summed = [i for i, s in enumerate(names) if s in plates]
    out = x.sum(summed) if summed else x
    factor = math.prod(dim_to_size[p] for p in plates if p not in names)
    if factor != 1:
        out = out * factor
    return out, "".join(s for s in names if s not in plates)


def _close(a: Tensor, b: Tensor, rtol: float) -> bool:
    finite = torch.isfinite(b)
    if not bool((torch.isfinite(a) == finite).all()):
        return False
    scale = max(1.0, float(b[finite].abs().max())) if bool(finite.any()) else 1.0
    return bool(((a[finite] - b[finite]).abs() <= rtol * scale).all())


# ---------------------------------------------------------------------------------------- sampler
