"""Inductor, PyTorch's compiler, on the batched potential's traced graph (:mod:`._potential`).

The graph is already ATen operations with static shapes, so it goes to inductor's graph compiler
directly, with three settings of its own: its on-disk graph cache consulted (a later fit of the
same model compiles in about a second), the code around the kernels generated as C++, and the
vector instruction sets taken from the CPU's flags instead of test builds.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__: list[str] = []

#: Graphs up to this many nodes get inductor's C++ wrapper (see :func:`_inductor_compile`).
_CPP_WRAPPER_MAX_NODES = 1000


def _inductor_compile(graph: Any, example: Tensor) -> tuple[Callable[[Tensor], Any], str]:
    """``graph`` compiled by inductor for inputs shaped as ``example``, and how (a few words).

    The graph is already ATen operations with static shapes, so it goes to inductor's graph
    compiler directly: ``torch.compile`` would trace it again with dynamo and check dynamo's
    guards on every call, about 45 us a call on the benchmark models (a third of the call).
    ``torch.compile`` is the fallback where that entry point is missing.
    """
    try:
        from torch._guards import TracingContext, tracing
        from torch._inductor import config
        from torch._inductor.compile_fx import compile_fx
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv
    except ImportError:  # pragma: no cover - the entry point moved
        return torch.compile(graph, backend="inductor", dynamic=False, fullgraph=True), "torch.compile"
    # Unless the user decided it, inductor first builds and loads a test library per SIMD
    # instruction set the CPU reports, to see which ones the C++ compiler can use: 7.7 of the 17 s
    # of a first compile with an empty cache.  Taken as usable here (this call only); a compiler
    # that cannot build them fails the compile, and the traced graph is kept.
    patch: dict[str, Any] = {"cpp.vec_isa_ok": True} if config.cpp.vec_isa_ok is None else {}

    # Inductor's on-disk graph cache (keyed by the graph and the shapes of its inputs, the data
    # among them) is consulted only under a tracing context whose fake mode has a shape
    # environment, as ``torch.compile`` sets up; without one every compile is a cache bypass.  With
    # it a later fit of the same model, in any process, loads the kernels instead of generating
    # and building them: 4.7 -> 1.0 s on logistic regression, 7.0 -> 1.1 s on the mixture.  The
    # shapes stay static (the example is a real tensor, with no source to make a symbol of).
    def build(options: dict[str, Any]) -> Any:
        context = TracingContext(FakeTensorMode(shape_env=ShapeEnv()))
        with config.patch(options), tracing(context), _instruction_sets_from_cpu_flags():
            return compile_fx(graph, [example])  # called with the one input: [gradient, potential]

    # The code that allocates the buffers and calls the kernels is generated as C++ instead of
    # Python: 91 -> 72 us a call on the enumerated mixture (its 40 buffers), 34 -> 32 us on
    # logistic regression, for 0.6 to 0.8 s more of compiling.  Not on very large graphs, whose
    # C++ would take long to build; plain Python where the C++ form fails.
    failed = ""
    if len(graph.graph.nodes) <= _CPP_WRAPPER_MAX_NODES:
        try:
            return build({**patch, "cpp_wrapper": True}), "C++ wrapper"
        except Exception as e:  # noqa: BLE001  the C++ wrapper fails in many types; Python's is built then
            failed = f" (the C++ one failed: {type(e).__name__})"
    return build(patch), "Python wrapper" + failed


def _compiled_marker(graph: Any, example: Tensor) -> Path | None:
    """A file that exists once inductor has compiled ``graph`` for inputs shaped as ``example``.

    Named by a digest of the graph's code, its constants' values (so other data never counts as
    compiled, though inductor may serve it), the input's shape and dtype and torch's version, in
    inductor's cache directory; it only informs the compile-time estimate.  None where inductor's
    graph cache is off or unknown.
    """
    try:
        from torch._inductor import config
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # pragma: no cover - moved in another torch
        return None
    if not config.fx_graph_cache:
        return None
    digest = hashlib.sha256(
        f"{torch.__version__}|{graph.code}|{tuple(example.shape)}|{example.dtype}".encode()
    )
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = getattr(graph, node.target)
            if isinstance(value, Tensor):
                digest.update(str(node.target).encode())
                data = value.detach().cpu()
                if data.dtype == torch.bfloat16:  # the one dtype numpy lacks
                    data = data.float()
                digest.update(data.numpy().tobytes())
    return Path(cache_dir()) / "probgen_compiled" / digest.hexdigest()


@contextlib.contextmanager
def _instruction_sets_from_cpu_flags() -> Iterator[None]:
    """Within: inductor's vector instruction sets are the x86 ones the CPU's flags name, AVX-512
    or AVX2, without its test builds.

    Inductor lists the usable instruction sets once a process (``valid_vec_isa_list``), and even
    with ``cpp.vec_isa_ok`` set it builds and loads two more test libraries for AVX-512's
    bfloat16 and VNNI extensions (1.4 s of a first compile), which only low-precision and integer
    kernels use; the potential is float32 or float64.  Its process-wide list is left unset, so a
    later compile of the user's own sees every extension; where it is already set, it is used.
    """
    try:
        from torch._inductor import cpu_vec_isa as isa

        known = isa.valid_vec_isa_list.cache_info().currsize > 0
        flags = set(isa.x86_isa_checker())
        listed = [v for v in isa.supported_vec_isa_list if type(v) in (isa.VecAVX512, isa.VecAVX2)]
    except (ImportError, AttributeError):  # pragma: no cover - another torch: its own probes
        yield
        return
    if known or not flags:  # already listed, or not x86: inductor's own list
        yield
        return
    # fresh instances that are usable without a test (their class's check is cached per instance:
    # the shared ones inductor's own list uses are left untested)
    found = [type(type(v).__name__, (type(v),), {"__bool__": _usable})() for v in listed if str(v) in flags]
    saved = isa.valid_vec_isa_list
    isa.valid_vec_isa_list = lambda: found  # type: ignore[assignment]  # a list, as the cached function returns
    try:
        yield
    finally:
        isa.valid_vec_isa_list = saved


def _usable(self: Any) -> bool:
    """An instruction set taken as usable (its CPU flag is set) without a test build."""
    return True
