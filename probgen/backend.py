"""Backends: the protocol, the registry, and options declared once as data.

A backend is a class with a ``name``, the capabilities it ``requires`` of a model (Protocols of
:mod:`probgen.capabilities`), its ``options`` (a tuple of :class:`Option`) and
``fit(model, data, *, seed, progress, **options) -> Fit``.  :class:`BackendBase` gives the rest:
``supports()`` checks the likelihood and the capabilities and names what is missing, and
:meth:`BackendBase.check_options` validates ``probgen.fit(...)`` options from the declaration
(unknown names answered with the valid ones, aliases mapped, types and ranges checked) before any
work starts.  The same declarations make the options table of ``help(probgen.fit)`` and the README.
"""

from __future__ import annotations

import abc
import difflib
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from probgen.capabilities import likelihood_problem, missing
from probgen.validation import non_negative_int, positive_float, positive_int

if TYPE_CHECKING:  # pragma: no cover
    from probgen.model import GenerativeModel
    from probgen.result import FitResult

__all__ = [
    "Backend",
    "BackendBase",
    "Option",
    "available_methods",
    "get_backend",
    "options_table",
    "register_backend",
]


@dataclass(frozen=True)
class Option:
    """One backend option: its name, the kinds of value it takes, default, range and help.

    ``kind`` is ``"int"`` (positive), ``"int0"`` (non-negative), ``"float"`` (positive),
    ``"float0"`` (non-negative), ``"(0, 1]"`` or ``"[0, 1)"``, ``"bool"``, ``"str"`` (one of
    ``choices``) or ``"any"`` (checked by the backend); ``none`` allows None; ``choices`` lists the
    accepted strings of a ``"str"`` option or of an ``"any"`` option given as a string.
    """

    name: str
    kind: str
    default: Any
    help: str
    none: bool = False
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        """The value, validated (a ``ValueError``/``TypeError`` naming the option otherwise)."""
        if value is None and self.none:
            return None
        kind = self.kind
        if kind == "int":
            return positive_int(value, self.name, allow_none=self.none)
        if kind == "int0":
            return non_negative_int(value, self.name, allow_none=self.none)
        if kind in ("float", "float0"):
            positive_float(value, self.name, allow_zero=kind == "float0", allow_none=self.none)
            return value
        if kind in ("(0, 1]", "[0, 1)"):
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            v = float(value) if ok else math.nan
            if not (0 < v <= 1 if kind == "(0, 1]" else 0 <= v < 1):
                raise ValueError(f"{self.name} must be in {kind}; got {value!r}.")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"{self.name} must be a bool; got {type(value).__name__}.")
            return value
        if kind == "str" or (self.choices and isinstance(value, str)):
            if value not in self.choices:
                none = "None or " if self.none else ""
                raise ValueError(
                    f"{self.name}={value!r} is not known; expected {none}one of: {', '.join(self.choices)}."
                )
        return value

    def describe(self) -> str:
        """``name`` (default): help, as in the options tables."""
        return f"``{self.name}`` ({self.default!r}): {self.help}"


#: The section of a backend's docstring that lists its declared options (``pg.fit`` keywords).
_OPTIONS_HEADER = "Other Parameters"


@runtime_checkable
class Backend(Protocol):
    """An inference backend: ``fit(model, data, seed=..., progress=..., **options) -> Fit``.

    ``supports(model, data)`` returns ``None`` when the backend can fit the model, otherwise a
    sentence saying why not.  ``accepts_chunks``/``accepts_streams``: whether it fits data read
    chunk by chunk (``chunk_size=``) or streamed in minibatches (a ``DataLoader``).
    """

    name: str
    accepts_chunks: bool
    accepts_streams: bool

    def supports(self, model: GenerativeModel, data: Any) -> str | None: ...

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]: ...

    def fit(
        self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any
    ) -> FitResult: ...


class BackendBase(abc.ABC):
    """What every built-in backend shares; a new backend subclasses it and writes ``fit``.

    Class attributes: ``name``; ``requires`` (capabilities a model must offer); ``likelihood``
    (False for backends that serve models without a normalised likelihood); ``options``;
    ``accepts_chunks``/``accepts_streams``/``accepts_missing``.
    """

    name: str = ""
    #: How messages name the backend ("EM", "SVI", ...); the name when empty.
    label: str = ""
    requires: tuple[type, ...] = ()
    likelihood: bool = True
    options: tuple[Option, ...] = ()
    accepts_chunks: bool = False
    accepts_streams: bool = False
    #: Whether it fits data prepared with ``missing="marginalize"`` (NaN cells marginalised by the
    #: model's own scores and hooks).
    accepts_missing: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.options and cls.__doc__ is not None and _OPTIONS_HEADER not in cls.__doc__:
            # the declared options as numpydoc's "Other Parameters": keyword options of ``pg.fit``
            lines = "\n".join(f"    {o.name} : default {o.default!r}\n        {o.help}" for o in cls.options)
            cls.__doc__ = f"{cls.__doc__.rstrip()}\n\n    {_OPTIONS_HEADER}\n    {'-' * len(_OPTIONS_HEADER)}\n{lines}\n"

    def supports(self, model: GenerativeModel, data: Any) -> str | None:
        """None when this backend can fit ``model``, else why not (naming missing capabilities)."""
        if self.likelihood:
            problem = likelihood_problem(model)
            if problem is not None:
                return problem
        lacks = missing(model, *self.requires)
        if lacks:
            return f"{model.name} does not offer the capabilit{'y' if len(lacks) == 1 else 'ies'} {', '.join(lacks)}"
        return self.refusal(model, data)

    def refusal(self, model: GenerativeModel, data: Any) -> str | None:
        """Backend-specific reasons to refuse a model that has every required capability."""
        return None

    def missing_refusal(self, model: GenerativeModel) -> str | None:
        """None when this backend fits ``model`` on data with missing cells (``missing=
        "marginalize"``), else why not; by default :attr:`accepts_missing` decides."""
        return None if self.accepts_missing else "it does not marginalise missing cells"

    def defaults(self) -> dict[str, Any]:
        """Every declared option at its default."""
        return {o.name: o.default for o in self.options}

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``options`` against the declaration: aliases mapped, unknown names refused."""
        return check_options(self.label or self.name, self.options, options)

    @abc.abstractmethod
    def fit(
        self, model: GenerativeModel, data: Any, *, seed: int, progress: bool, **options: Any
    ) -> FitResult:
        """Fit ``model`` to prepared ``data`` with validated ``options``."""


def check_options(label: str, declared: Iterable[Option], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` validated against ``declared`` (see :meth:`BackendBase.check_options`)."""
    by_name = {o.name: o for o in declared}
    alias = {a: o.name for o in by_name.values() for a in o.aliases}
    unknown = sorted(k for k in options if alias.get(k, k) not in by_name)
    if unknown:
        close = {k: difflib.get_close_matches(k, list(by_name) + list(alias), n=1) for k in unknown}
        hint = "".join(f" ({k!r}: did you mean {c[0]!r}?)" for k, c in close.items() if c)
        valid = ", ".join(sorted(by_name)) or "none"
        raise ValueError(f"Unknown {label} option(s) {unknown}; expected some of: {valid}.{hint}")
    out: dict[str, Any] = {}
    for key, value in options.items():
        real = alias.get(key, key)
        if real in out:
            raise ValueError(f"{label} option {real!r} is given twice (as {key!r} and by another name).")
        out[real] = by_name[real].check(value)
    return out


_BACKENDS: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Register a backend under ``name`` so ``probgen.fit(..., method=name)`` finds it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty string; got {name!r}.")
    _BACKENDS[name] = factory


def available_methods() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(_BACKENDS)


def get_backend(method: str | Backend) -> Backend:
    """The backend registered as ``method`` (or ``method`` itself when it is a backend)."""
    if not isinstance(method, str):
        if isinstance(method, Backend):
            return method
        raise TypeError(
            f"method must be a backend name or instance (a probgen.backend.BackendBase subclass); "
            f"got {type(method).__name__}. A model of several arguments takes its data as one mapping "
            "({'x': X, 'y': y}) or one tuple ((X, y))."
        )
    if method not in _BACKENDS:
        raise ValueError(f"Unknown method {method!r}; expected one of: {', '.join(sorted(_BACKENDS))}.")
    return _BACKENDS[method]()


def capable_methods(model: GenerativeModel, data: Any) -> list[str]:
    """Registered backends that can fit ``model`` on ``data``."""
    return [name for name in sorted(_BACKENDS) if _BACKENDS[name]().supports(model, data) is None]


def options_table(*, markdown: bool = False) -> str:
    """The options of every registered backend, from their declarations.

    Plain text (one line an option, with its help: ``help(probgen.fit)``), or a markdown table of
    one row a backend (names, defaults and aliases: the README's table, kept in step by a test).
    """
    lines = ["| method | options (defaults) |", "|---|---|"] if markdown else []
    for name in sorted(_BACKENDS):
        backend = _BACKENDS[name]()
        declared = backend.options if isinstance(backend, BackendBase) else ()
        if markdown:
            cells = [
                f"`{o.name}` ({o.default!r}{'; also ' + ', '.join(f'`{a}`' for a in o.aliases) if o.aliases else ''})"
                for o in declared
            ]
            lines.append(f'| `"{name}"` | {", ".join(cells) or "none"} |')
            continue
        lines.append(f'"{name}"')
        for o in declared:
            alias = f" (also {', '.join(o.aliases)})" if o.aliases else ""
            lines.append(f"    {o.describe()}{alias}")
    return "\n".join(lines)
