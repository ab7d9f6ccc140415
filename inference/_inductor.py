"""Inductor, PyTorch's compiler, on the batched potential's traced graph (:mod:`._potential`).

The graph is already ATen operations with static shapes, so it goes to inductor's graph compiler
directly, with three settings of its own: its on-disk graph cache consulted (a later fit of the
same model compiles in about half a second), the code around the kernels generated as C++ on
graphs with many buffers, and the vector instruction sets taken from the CPU's flags instead of
test builds."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__: list[str] = []

#: Graphs with this many nodes may get inductor's C++ wrapper (see :func:`_inductor_compile`):
#: measured, 22 us of 130 a call saved on the enumerated mixture (234 nodes), 2 us of 19 on
#: logistic regression (87 nodes) and none on eight schools (93), for about 1 s more of compiling;
#: very large graphs' C++ would take long to build.
CPP_WRAPPER_NODES = range(200, 1001)


def _inductor_compile(
    graph: Any, example: Tensor, cpp_wrapper: bool = False
) -> tuple[Callable[[Tensor], Any], str]:
    """``graph`` compiled by inductor for inputs shaped as ``example``, and how (a few words).

    The graph is already functional ATen operations with static shapes, so after inductor's
    decompositions (``make_fx`` once more, about 0.1 s) it goes to inductor's graph compiler,
    ``compile_fx_inner``, directly.  The full entry point, ``compile_fx``, would trace it again
    through AOT autograd (about 0.5 s) and run the compiled function inside AOT's runtime
    wrappers, 15 to 20 us a call on the benchmark models (logistic regression: 40 -> 20 us);
    ``torch.compile`` would also check dynamo's guards on every call.  ``compile_fx`` is the
    fallback where the direct route fails.  ``cpp_wrapper``: the code that allocates the buffers
    and calls the kernels generated as C++ instead of Python (see :data:`CPP_WRAPPER_NODES`),
    Python's where the C++ form fails.
    """
    try:
        from torch._guards import TracingContext, tracing
        from torch._inductor import config
        from torch._inductor.compile_fx import compile_fx, compile_fx_inner
        from torch._inductor.decomposition import select_decomp_table
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.proxy_tensor import make_fx
        from torch.fx.experimental.symbolic_shapes import ShapeEnv
    except ImportError:  # pragma: no cover - the entry points moved
        return torch.compile(graph, backend="inductor", dynamic=False, fullgraph=True), "torch.compile"
    # Unless the user decided it, inductor first builds and loads a test library per SIMD
    # instruction set the CPU reports, to see which ones the C++ compiler can use: 7.7 of the 17 s
    # of a first compile with an empty cache.  Taken as usable here (this call only); a compiler
    # that cannot build them fails the compile, and the traced graph is kept.
    patch: dict[str, Any] = {"cpp.vec_isa_ok": True} if config.cpp.vec_isa_ok is None else {}

    # Inductor's on-disk graph cache (keyed by the graph and its input's shape; the data are
    # constants read from the graph when a compiled graph is loaded) is consulted only under a
    # tracing context whose fake mode has a shape environment, as ``torch.compile`` sets up;
    # without one every compile is a cache bypass.  With it a later fit of the same model, in any
    # process, loads the kernels instead of generating and building them (logistic regression:
    # 1.7 -> 0.5 s).  The shapes stay static: the example has no source to make a symbol of.
    @contextlib.contextmanager
    def settings(cpp: bool, fake: Any) -> Iterator[None]:
        with config.patch({**patch, "cpp_wrapper": cpp}), tracing(TracingContext(fake)):
            with _instruction_sets_from_cpu_flags():
                yield

    def direct(cpp: bool) -> Callable[[Tensor], Any]:
        aten = make_fx(graph, decomposition_table=select_decomp_table())(example)
        fake = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)  # the data stay real
        with settings(cpp, fake):
            compiled = compile_fx_inner(aten, [fake.from_tensor(example)], cpp_wrapper=cpp, is_inference=True)
        return lambda z: compiled([z])  # inductor's calling convention: the list of inputs

    failed = ""
    if cpp_wrapper:
        try:
            return direct(True), "C++ wrapper"
        except Exception as e:  # noqa: BLE001  the C++ wrapper fails in many types; Python's is built then
            failed = f" (the C++ one failed: {type(e).__name__})"
    try:
        return direct(False), "Python wrapper" + failed
    except Exception as e:  # noqa: BLE001  as above; then through AOT autograd, which may follow the graph
        failed = f" (the direct compile failed: {type(e).__name__})"
    with settings(False, FakeTensorMode(shape_env=ShapeEnv())):
        through_aot: Callable[[Tensor], Any] = compile_fx(graph, [example])  # type: ignore[assignment]
    return through_aot, "Python wrapper through AOT autograd" + failed


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
