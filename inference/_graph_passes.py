"""Shrinking the traced potential-and-gradient graph before it is compiled.

``make_fx`` records every ATen operation Pyro and autograd run, and many of them do nothing a
compiled graph needs to repeat on every call: prior parameters lifted and expanded afresh, the
logarithm of a fixed scale recomputed, ``x * 1``, ``x + 0.0``, identity views and permutes,
detaches, the zero log-Jacobian of an identity transform summed into the result, the same
``unsqueeze -> expand -> view`` of the output gradient built four times.  On eight schools this is
about two nodes in three, and each node costs about 1.5 us a call under TorchScript: the whole
potential-and-gradient call of a small model is mostly such overhead, so removing the nodes is the
cheapest speed-up there is.  PyTorch offers no such pass for an ATen graph outside inductor (whose
compile costs seconds), hence this module; the passes keep the graph's values bit for bit, but
for one case (a broadcast that a ``view`` reads: a reduction downstream may then add in another
order, a last-bit difference), and the caller still checks the result against the eager potential.

The caller retraces the graph functionalised (no in-place operations: about 0.1 s for a few
hundred nodes), so that a comparison written in place into a mask still moves before its
broadcast; any node that still shares memory with a tensor mutated in place is left untouched.
The passes, in order: constant folding (a node whose inputs
are all constants, or whose value depends only on the shape of its input, such as
``zeros_like``, becomes a stored constant); removal of identities (an operation whose output is
its input: same-shape views, expands and permutes, detaches, multiplication and division by one,
addition and subtraction of zero, ``pow(x, 1)``, ``neg(neg(x))``); common-subexpression
elimination; dead-code elimination.
"""

from __future__ import annotations

import math
import operator
import time
from typing import Any

import torch
from torch import Tensor
from torch.fx import GraphModule, Interpreter, Node

__all__ = ["simplify"]

aten = torch.ops.aten

#: Operations whose value depends only on the shape, dtype and device of their tensor input
#: (factories with no tensor input, such as ``arange``, are constants by the general rule).
_SHAPE_ONLY = {
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.full_like.default,
    aten.new_zeros.default,
    aten.new_ones.default,
    aten.new_full.default,
}
#: Operations that return their first input unchanged.
_ALWAYS_IDENTITY = {aten.detach.default, aten.alias.default, aten.lift_fresh_copy.default, aten.clone.default}
#: Operations that return their first input when the output's shape is the input's.
_SAME_SHAPE_IDENTITY = {
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.expand.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
}
#: Operations that need their input's memory laid out as they compute (refuse a broadcast view).
_NEEDS_STRIDES = {aten.view.default, aten._unsafe_view.default, aten.as_strided.default}
_MUL = {aten.mul.Tensor, aten.mul.Scalar}
_DIV = {aten.div.Tensor, aten.div.Scalar}
_ADD = {aten.add.Tensor, aten.add.Scalar}
_SUB = {aten.sub.Tensor, aten.sub.Scalar}


def simplify(graph: GraphModule, example: Tensor) -> GraphModule:
    """Shrink ``graph`` in place to fewer nodes computing the same values; returns it.

    ``example`` is its one tensor input, on which every node's value is recorded once (the
    constants folded, and the shapes and strides the identity rules compare).
    """
    values = _record(graph, example)
    pinned = _mutated_aliases(graph)
    _fold_constants(graph, values, pinned)
    _drop_identities(graph, values, pinned)
    graph.graph.eliminate_dead_code()
    _sink_expands(graph, values, pinned)
    _outer_products(graph, values, pinned)
    _matmul_layouts(graph, values, pinned)
    _common_subexpressions(graph, pinned)
    graph.graph.eliminate_dead_code()
    graph.graph.lint()
    graph.recompile()
    return graph


def _record(gm: GraphModule, example: Tensor) -> dict[Node, Any]:
    """Every node's value on ``example`` (one run of the graph)."""
    values: dict[Node, Any] = {}

    class Recorder(Interpreter):
        def run_node(self, n: Node) -> Any:
            out = super().run_node(n)
            values[n] = out
            return out

    with torch.no_grad():
        Recorder(gm).run(example)
    return values


def _is_view(n: Node) -> bool:
    schema = getattr(n.target, "_schema", None)
    return bool(schema is not None and schema.returns and schema.returns[0].alias_info is not None)


def _is_mutable(n: Node) -> bool:
    schema = getattr(n.target, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


def _base(n: Node) -> Node:
    while n.op == "call_function" and (_is_view(n) or n.target is operator.getitem) and n.args:
        first = n.args[0]
        if not isinstance(first, Node):
            break
        n = first
    return n


def _mutated_aliases(gm: GraphModule) -> set[Node]:
    """Nodes that share memory with a tensor some operation mutates in place (left untouched)."""
    bases = {
        _base(n.args[0])
        for n in gm.graph.nodes
        if n.op == "call_function" and _is_mutable(n) and n.args and isinstance(n.args[0], Node)
    }
    if not bases:
        return set()
    return {n for n in gm.graph.nodes if _base(n) in bases or _is_mutable(n)}


def _deterministic(n: Node) -> bool:
    tags = getattr(n.target, "tags", ())
    return torch.Tag.nondeterministic_seeded not in tags and not _is_mutable(n)


def _fold_constants(gm: GraphModule, values: dict[Node, Any], pinned: set[Node]) -> None:
    """Replace every constant node that feeds a non-constant one by a stored tensor."""
    constant: set[Node] = set()
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            constant.add(n)
        elif n.op == "call_function" and n not in pinned and _deterministic(n):
            inputs = n.all_input_nodes
            if n.target in _SHAPE_ONLY or all(i in constant for i in inputs):
                constant.add(n)
    count = 0
    for n in list(gm.graph.nodes):
        if n not in constant or n.op == "get_attr" or not isinstance(values.get(n), Tensor):
            continue
        if all(u in constant for u in n.users):
            continue
        name = f"_pg_folded_{count}"
        count += 1
        gm.register_buffer(name, values[n].detach().clone())
        with gm.graph.inserting_before(n):
            stored = gm.graph.get_attr(name)
        stored.meta = dict(n.meta)
        values[stored] = values[n]
        n.replace_all_uses_with(stored)


def _same_meta(a: Any, b: Any) -> bool:
    return (
        isinstance(a, Tensor)
        and isinstance(b, Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.stride() == b.stride()
    )


def _equals(arg: Any, number: float, values: dict[Node, Any]) -> bool:
    """Whether ``arg`` is the number, or a constant tensor all of whose entries equal it."""
    if isinstance(arg, bool):
        return False
    if isinstance(arg, (int, float)):
        return float(arg) == number
    if isinstance(arg, Node) and arg.op == "get_attr":
        v = values.get(arg)
        return isinstance(v, Tensor) and v.numel() > 0 and bool((v == number).all())
    return False


def _identity_of(n: Node, values: dict[Node, Any]) -> Node | None:
    """The input ``n`` returns unchanged, if any (its value, shape, dtype and strides)."""
    if n.op != "call_function" or not n.args or not isinstance(n.args[0], Node):
        return None
    first, out = n.args[0], values.get(n)
    same = _same_meta(out, values.get(first))
    t = n.target
    if t in _ALWAYS_IDENTITY or t in _SAME_SHAPE_IDENTITY:
        return first if same else None
    if t is aten.permute.default:
        dims = n.args[1]
        return (
            first
            if same and isinstance(dims, (list, tuple)) and list(dims) == list(range(len(dims)))
            else None
        )
    if t is aten.neg.default and first.op == "call_function" and first.target is aten.neg.default:
        inner = first.args[0]
        return inner if isinstance(inner, Node) and _same_meta(out, values.get(inner)) else None
    if len(n.args) < 2 or n.kwargs.get("alpha", 1) != 1:
        return None
    other = n.args[1]
    if t in _MUL or t in _ADD:  # commutative: either side may be the neutral element
        neutral = 1.0 if t in _MUL else 0.0
        if same and _equals(other, neutral, values):
            return first
        if isinstance(other, Node) and _same_meta(out, values.get(other)) and _equals(first, neutral, values):
            return other
        return None
    if (t in _DIV and _equals(other, 1.0, values)) or (t in _SUB and _equals(other, 0.0, values)):
        return first if same else None
    if t is aten.pow.Tensor_Scalar and _equals(other, 1.0, values):
        return first if same else None
    return None


def _drop_identities(gm: GraphModule, values: dict[Node, Any], pinned: set[Node]) -> None:
    for n in list(gm.graph.nodes):
        if n in pinned:
            continue
        keep = _identity_of(n, values)
        if keep is not None and keep not in pinned:
            n.replace_all_uses_with(keep)


def _sink_expands(gm: GraphModule, values: dict[Node, Any], pinned: set[Node]) -> None:
    """Apply pointwise operations before the broadcasts that feed them, not after.

    ``log(expand(scale, (3, 4, 1000)))`` takes the logarithm of 12 numbers, not 12,000, then
    expands: the same numbers (a pointwise operation commutes with broadcasting), often a
    thousand times less work for a mixture's enumerated sites, whose parameters are broadcast
    over every data item.  The result is expanded again, so shapes downstream are unchanged;
    a node with a user that writes in place, or that needs memory laid out (``view``) and cannot
    view the broadcast, is left alone.
    """
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n in pinned or torch.Tag.pointwise not in getattr(n.target, "tags", ()):
            continue
        out = values.get(n)
        if not isinstance(out, Tensor) or any(_is_mutable(u) for u in n.users):
            continue
        sources = [
            a.args[0] if isinstance(a, Node) and a.target is aten.expand.default and a not in pinned else a
            for a in n.args
        ]
        if all(s is a for s, a in zip(sources, n.args, strict=True)):
            continue
        concrete = [values[s] if isinstance(s, Node) else s for s in sources]
        if any(isinstance(s, Node) and not isinstance(values.get(s), Tensor) for s in sources):
            continue
        shape = _broadcast([c.shape for c in concrete if isinstance(c, Tensor)] + [out.shape])
        if shape != tuple(out.shape):  # the sources must broadcast to the output, as the expands did
            continue
        small = n.target(*concrete, **n.kwargs)
        if not isinstance(small, Tensor) or small.dtype != out.dtype or small.numel() >= out.numel():
            continue
        viewed = _views_of_broadcast(n, small.expand(out.shape), values)
        if viewed is None:
            continue
        values.update(viewed)
        with gm.graph.inserting_before(n):
            op = gm.graph.call_function(n.target, tuple(sources), dict(n.kwargs))
            wide = gm.graph.call_function(aten.expand.default, (op, list(out.shape)))
        values[op], values[wide] = small, small.expand(out.shape)
        n.replace_all_uses_with(wide)


def _views_of_broadcast(n: Node, wide: Tensor, values: dict[Node, Any]) -> dict[Node, Tensor] | None:
    """The values of ``n``'s users that need its memory laid out (``view``) when ``n`` becomes the
    broadcast ``wide``, or None when one of them cannot view a broadcast (a static graph's strides
    are the same on every call, so trying it once decides)."""
    viewed: dict[Node, Tensor] = {}
    for u in n.users:
        if u.target not in _NEEDS_STRIDES:
            continue
        args = [wide if a is n else values.get(a, a) if isinstance(a, Node) else a for a in u.args]
        try:
            viewed[u] = u.target(*args, **u.kwargs)
        except RuntimeError:  # "view size is not compatible with input tensor's size and stride"
            return None
    return viewed


def _outer_products(gm: GraphModule, values: dict[Node, Any], pinned: set[Node]) -> None:
    """``bmm`` of ``(B, m, 1)`` by ``(B, 1, n)`` as a broadcast product.

    Each entry is one product either way (the same number), but ``bmm`` calls a matrix kernel per
    batch: over the 4,000 (chain, item) pairs of an enumerated mixture's gradient it took about
    130 us where the product takes a tenth, and a compiler can fuse the product with its
    neighbours.
    """
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target is not aten.bmm.default or n in pinned:
            continue
        a, b = n.args[0], n.args[1]
        va, vb = values.get(a), values.get(b)
        if not (
            isinstance(va, Tensor) and isinstance(vb, Tensor) and va.shape[-1] == 1 and vb.shape[-2] == 1
        ):
            continue
        with gm.graph.inserting_before(n):
            product = gm.graph.call_function(aten.mul.Tensor, (a, b))
        values[product] = values[n]
        n.replace_all_uses_with(product)


def _matmul_layouts(gm: GraphModule, values: dict[Node, Any], pinned: set[Node]) -> None:
    """``mm(a, b)`` with a constant operand computed as ``mm(b', a')'`` when that is measured faster.

    The matrix kernel's speed depends on which operand is on the left and how each is laid out:
    a logistic regression's gradient ``mm(X', r')`` of its (31, 569) covariates by the residuals of
    4 chains took 22 us, ``mm(r, X)`` 5.6 us (the same products, summed in another order: the
    last bits may differ).  The constant is stored in the layout the transposed form reads, both
    forms are timed on the recorded values, and the transposed one is kept when it is at least a
    quarter faster.  A node whose users need its memory laid out (``view``) is left alone.
    """
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target is not aten.mm.default or n in pinned:
            continue
        a, b = n.args[0], n.args[1]
        if not (isinstance(a, Node) and isinstance(b, Node)) or (a.op == "get_attr") == (b.op == "get_attr"):
            continue  # one constant operand exactly
        if any(u.target in _NEEDS_STRIDES or _is_mutable(u) for u in n.users):
            continue
        va, vb = values.get(a), values.get(b)
        if not (isinstance(va, Tensor) and isinstance(vb, Tensor)):
            continue
        # mm(a, b) = mm(b', a')': the constant transposed and stored contiguous, the other a view
        const_right = b.op == "get_attr"
        variable, v_variable = (a, va) if const_right else (b, vb)
        stored = (vb if const_right else va).t().contiguous()
        left, right = (stored, v_variable.t()) if const_right else (v_variable.t(), stored)
        if _best_time(torch.mm, left, right) > 0.75 * _best_time(torch.mm, va, vb):
            continue
        name = f"_pg_mm_{n.name}"
        gm.register_buffer(name, stored)
        with gm.graph.inserting_before(n):
            const = gm.graph.get_attr(name)
            other = gm.graph.call_function(aten.t.default, (variable,))
            product = gm.graph.call_function(
                aten.mm.default, (const, other) if const_right else (other, const)
            )
            out = gm.graph.call_function(aten.t.default, (product,))
        values[const], values[other] = stored, v_variable.t()
        values[product] = torch.mm(left, right)
        values[out] = values[product].t()
        n.replace_all_uses_with(out)


def _best_time(fn: Any, *args: Any, repeats: int = 5, number: int = 20) -> float:
    """The least of ``repeats`` timings of ``number`` calls of ``fn(*args)`` (after a warm call)."""
    fn(*args)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def _broadcast(shapes: list[Any]) -> tuple[int, ...] | None:
    """The broadcast of ``shapes`` (right-aligned, size one stretching), or None if they clash."""
    out: list[int] = []
    for dims in zip(
        *(reversed((1,) * (max(map(len, shapes)) - len(s)) + tuple(s)) for s in shapes), strict=True
    ):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(reversed(out))


def _key(arg: Any) -> Any:
    if isinstance(arg, (list, tuple)):
        return (type(arg).__name__, tuple(_key(a) for a in arg))
    if isinstance(arg, dict):
        return tuple(sorted((k, _key(v)) for k, v in arg.items()))
    if isinstance(arg, (Node, int, float, bool, str, type(None), torch.dtype, torch.device)):
        return arg
    return (type(arg).__name__, repr(arg))


def _common_subexpressions(gm: GraphModule, pinned: set[Node]) -> None:
    """Merge nodes that apply the same deterministic, non-mutating operation to the same inputs."""
    seen: dict[Any, Node] = {}
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n in pinned or not _deterministic(n):
            continue
        if any(_is_mutable(u) for u in n.users):
            continue
        key = (n.target, _key(n.args), _key(n.kwargs))
        if key in seen:
            n.replace_all_uses_with(seen[key])
        else:
            seen[key] = n
