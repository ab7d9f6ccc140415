"""`probgen.fit`, the `Fit` every fit returns, and `probgen.load`.

The backend protocol, registry and option declarations live in :mod:`probgen.backend`; the
immutable result and its shared tools in :mod:`probgen.result`.  This module adds what stands on
top of them: ArviZ, summaries, saving and pictures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, overload

import pandas as pd
import pyro
import torch
from torch import Tensor

from probgen._fallback_plot import plot_fit_fallback
from probgen.arguments import ModelArgs
from probgen.arviz_bridge import to_inference_data
from probgen.backend import (
    Backend,
    BackendBase,
    available_methods,
    capable_methods,
    get_backend,
    options_table,
    register_backend,
)
from probgen.capabilities import MissingValues, Plottable
from probgen.diagnostics import summary as _summary
from probgen.errors import ModelNotSupportedError
from probgen.model import GenerativeModel, registered_model
from probgen.model import model as as_model
from probgen.persistence import check_config_sizes, read_saved, save_fit
from probgen.relabel import align_posterior
from probgen.result import FitResult
from probgen.state import isolated_rng, isolated_state, serialised
from probgen.streaming import ChunkedData, StreamingData, is_stream_source
from probgen.summaries import posterior_means
from probgen.validation import check_seed, positive_int

__all__ = [
    "Backend",
    "BackendBase",
    "Fit",
    "available_methods",
    "capable_methods",
    "fit",
    "get_backend",
    "load",
    "register_backend",
]


FitT = TypeVar("FitT", bound="Fit")


class _FamilyModel(Protocol[FitT]):
    """A model whose fits are of its family's own class (what type checkers see of ``fit_class``)."""

    fit_class: ClassVar[type[FitT]]


@overload
def fit(
    model: _FamilyModel[FitT],
    data: Any,
    method: str | Backend = ...,
    *,
    seed: int = ...,
    progress: bool | None = ...,
    **options: Any,
) -> FitT: ...


@overload
def fit(
    model: Any,
    data: Any,
    method: str | Backend = ...,
    *,
    seed: int = ...,
    progress: bool | None = ...,
    **options: Any,
) -> Fit: ...


@serialised
def fit(
    model: Any,
    data: Any,
    method: str | Backend = "svi",
    *,
    seed: int = 0,
    progress: bool | None = None,
    **options: Any,
) -> Fit:
    """Fit ``model`` to ``data`` with the backend named ``method``.

    Parameters
    ----------
    model : GenerativeModel or callable
        A probgen model, or a plain Pyro function ``fn(data=None)`` (wrapped by `probgen.model`).
    data : array-like
        Data items; numpy, torch and pandas are accepted (families accept more, e.g. lists of
        sequences).  Validated before any work starts.
    method : {"em", "svi", "enum", "mcmc", "cd", "adversarial"} or Backend, default "svi"
        Inference backend ("cd": contrastive divergence for energy-based models such as the RBM;
        "adversarial": generator against discriminator for implicit models such as the GAN).
    seed : int, default 0
        Seed for every random choice, so fits are reproducible.
    progress : bool, optional
        Show progress bars (tqdm).  Default: only on a terminal or in a notebook, so logs and
        CI output stay clean; ``True`` forces them, ``False`` hides them.
    **options
        Backend options, with the names users know (each backend's docstring has details):

        {options}

    Missing values: ``missing="raise"`` (default) refuses NaN in the data; ``missing="marginalize"``
    reads NaN as a cell missing at random and marginalises it out of the likelihood, for models
    that offer it (the mixtures and HMMs, with ``method="em"``: exact EM with the missing cells'
    conditional expectations; ``VAE`` with ``method="svi"``: a masked likelihood; a user's Pyro
    model with every Pyro backend: NaN in the data an observed site reads becomes a masked
    observation, see :mod:`probgen.masking`).  The fit keeps the choice: its ``log_prob``,
    ``predict``, ``predict_proba`` and ``impute`` read NaN in new data as missing too.

    Scale options: ``num_items`` (streamed data: a ``DataLoader`` or re-iterable of minibatches,
    SVI only; the items in the whole data set, default the loader's sampler length),
    ``chunk_size`` (closed-form EM over an array or numpy memmap, chunk by chunk), ``device``
    (see the README), ``num_threads`` (torch threads during the fit; default one thread for data
    of at most two million numbers, whose operations are too small to share out, else torch's
    setting; MCMC takes its own).  Under an initialised ``torch.distributed`` process group, SVI
    treats each rank's data as its shard of the union.

    The fit leaves Pyro's param store, the random generators, torch's default dtype and thread
    count as it found them.

    Returns
    -------
    Fit

    Raises
    ------
    ValueError
        Unknown method, bad data (NaN, empty, wrong shape), or an impossible option.
    TypeError
        The backend cannot fit this model (the message lists those that can).
    """
    backend = get_backend(method)
    check_seed(seed)
    if progress is None:
        progress = interactive()
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool or None; got {type(progress).__name__}.")
    # tracing the model to prepare and check it may create pyro.param sites and draw latents:
    # in a param store and random state of its own, so the user's are left as they were
    with pyro.get_param_store().scope(), isolated_rng(None):
        gm = as_model(model) if not isinstance(model, GenerativeModel) else model
        if not isinstance(gm, GenerativeModel):
            raise TypeError(f"model must be a probgen model or a Pyro function; got {type(model).__name__}.")
        num_items = options.pop("num_items", None)
        chunk_size = options.pop("chunk_size", None)
        missing = check_missing(options.pop("missing", "raise"), gm, backend, chunk_size, num_items, data)
        device = _check_device(options.pop("device", None))
        own_threads = any(o.name == "num_threads" for o in getattr(backend, "options", ()))
        threads = (
            None
            if own_threads
            else positive_int(options.pop("num_threads", None), "num_threads", allow_none=True)
        )
        options = backend.check_options(options)
        prepared: Any
        if chunk_size is not None:
            if not backend.accepts_chunks:
                raise ValueError(
                    f"chunk_size= reads the data chunk by chunk for closed-form EM; method={backend.name!r} "
                    "does not fit that way. Use method='em' (families with sufficient statistics), or for "
                    "SVI pass a DataLoader of minibatches."
                )
            prepared = ChunkedData(data, chunk_size, gm.prepare_data)
            example = prepared.first
        elif num_items is not None or is_stream_source(data):
            if not backend.accepts_streams:
                raise ValueError(
                    f"data streamed in minibatches (a DataLoader or num_items=) need a backend that fits "
                    f"from minibatches; method={backend.name!r} does not. Use method='svi', or for "
                    "closed-form EM pass an array or numpy memmap with chunk_size=."
                )
            if num_items is None:
                try:  # the sampler's length: a DistributedSampler gives this rank's shard
                    sampler = getattr(getattr(data, "batch_sampler", None), "sampler", None)
                    num_items = len(sampler) if sampler is not None else len(data.dataset)
                except (AttributeError, TypeError):
                    raise ValueError(
                        "num_items is needed: the number of items in the whole data set (the loader's "
                        "dataset has no len())."
                    ) from None
            prepared = StreamingData(data, num_items, gm.prepare_data)
            example = prepared.first
        elif missing == "marginalize":
            assert isinstance(gm, MissingValues)  # check_missing refused any other model
            prepared = gm.prepare_missing(data)
            example = prepared
        else:
            prepared = gm.prepare_data(data)
            example = prepared
        reason = backend.supports(gm, example)
        if reason is not None:
            capable = [m for m in capable_methods(gm, example) if m != backend.name]
            raise ModelNotSupportedError(
                f"method={backend.name!r} cannot fit {gm.name}: {reason}. "
                f"Methods that can: {', '.join(capable) if capable else 'none of the registered backends'}."
            )
        # On an accelerator, the data move there and tensors the fit creates default to it (CPU is
        # the default and needs nothing).
        target = device if device is not None and device.type != "cpu" else None
        if target is not None and isinstance(prepared, Tensor | tuple | list):
            prepared = _to_device(prepared, target)
            example = prepared
    with isolated_state(int(seed)), torch.device(target) if target is not None else _nothing():
        if not own_threads:  # restored by isolated_state
            torch.set_num_threads(threads or _threads_for(prepared))
        result = backend.fit(gm, prepared, seed=int(seed), progress=progress, **options)
        store = pyro.get_param_store()
        params, posterior = dict(result.params), dict(result.posterior) if result.posterior else None
        # the store is this fit's own (isolated_state): empty means no pyro.param site was used,
        # and a point fit then needs no trace of the model here (a fixed cost on small fits)
        if len(store.keys()) or posterior:
            roles = gm.roles(example)
            for name in roles.param_sites:  # pyro.param sites are part of the fit everywhere
                if name not in params and name in store:
                    params[name] = store[name].detach().clone()
            if posterior:  # relabel exchangeable components of the draws (label switching)
                posterior = align_posterior(gm, posterior, example, params)
                fixed = {k: v for k, v in params.items() if k in roles.param_sites}
                summarised = [k for k in params if k in posterior and k in roles.continuous_sites]
                params.update(posterior_means(gm, example, posterior, summarised, fixed))
        extras = dict(result.extras)
        if missing == "marginalize":  # the fit's tools read NaN in new data as missing too
            extras["missing"] = missing
        if isinstance(data, pd.DataFrame) and not isinstance(example, ModelArgs):
            # the column names, for labelled outputs (ArviZ's feature coords, summaries, the CLI)
            extras.setdefault("feature_names", json.dumps([str(c) for c in data.columns]))
        if gm.has_guide and len(store.keys()):
            # the guide's own pyro.param values (an encoder's), for importance-sampled scores of
            # per-item latents (probgen.marginal); the model's sites are in params already
            model_params = set(gm.roles(example).param_sites)
            extras.setdefault(
                "guide_params",
                {k: store[k].detach().clone() for k in store.keys() if k not in model_params},
            )
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(FitResult)}
    return fit_class(gm)(**{**fields, "params": params, "posterior": posterior, "extras": extras})


#: Data of at most this many numbers are fitted on one torch thread: the operations of such fits
#: are too small to share out, and on a busy machine extra threads spin waiting for a core
#: (measured: a small CharRNN fit 6-50x slower on two threads beside two other processes).
_ONE_THREAD_NUMEL = 2_000_000


def _threads_for(prepared: Any) -> int:
    """Torch threads for a fit on ``prepared``: one for small data, else torch's own setting."""
    numel = _numel(prepared, 3)
    if numel is None:
        return torch.get_num_threads()
    return 1 if numel <= _ONE_THREAD_NUMEL else torch.get_num_threads()


def _numel(obj: Any, depth: int) -> int | None:
    """Numbers held in the tensors of prepared data (a tensor, model arguments, a family's data
    object); None when there are none to count (streamed data: the batches decide)."""
    if isinstance(obj, Tensor):
        return obj.numel()
    if depth == 0 or isinstance(obj, str | bytes | StreamingData):
        return None
    if isinstance(obj, ModelArgs):
        obj = obj.values
    if isinstance(obj, Mapping):
        parts = [_numel(v, depth - 1) for v in obj.values()]
    elif isinstance(obj, list | tuple):
        parts = [_numel(v, depth - 1) for v in obj]
    elif hasattr(obj, "__dict__"):
        parts = [_numel(v, depth - 1) for v in vars(obj).values()]
    else:
        return None
    found = [p for p in parts if p is not None]
    return sum(found) if found else None


#: The values of ``probgen.fit(..., missing=...)``.
MISSING_CHOICES = ("raise", "marginalize")


def _missing_refusal(backend: Backend, gm: GenerativeModel) -> str | None:
    """Why ``backend`` cannot fit ``gm`` on data with missing cells (None when it can)."""
    ask = getattr(backend, "missing_refusal", None)
    if ask is not None:
        reason: str | None = ask(gm)
        return reason
    return None if getattr(backend, "accepts_missing", False) else "it does not marginalise missing cells"


def check_missing(
    missing: Any, gm: GenerativeModel, backend: Backend, chunk_size: Any, num_items: Any, data: Any
) -> str:
    """Validate ``missing=`` against the model, the backend and the form of the data."""
    if not isinstance(missing, str) or missing not in MISSING_CHOICES:
        raise ValueError(
            f"missing must be one of {', '.join(repr(c) for c in MISSING_CHOICES)}; got {missing!r}."
        )
    if missing == "raise":
        return missing
    if not isinstance(gm, MissingValues):
        raise TypeError(
            f"missing='marginalize' needs a model that marginalises missing cells (the capability "
            f"MissingValues: prepare_missing); {gm.name} does not offer it. Drop or impute the "
            "missing values before fitting."
        )
    refusal = _missing_refusal(backend, gm)
    if refusal is not None:
        able = [m for m in available_methods() if _missing_refusal(get_backend(m), gm) is None]
        raise ValueError(
            f"missing='marginalize' is served by method={' or '.join(repr(m) for m in able) or 'none'} "
            f"for {gm.name}; method={backend.name!r} cannot: {refusal}."
        )
    if chunk_size is not None or num_items is not None or is_stream_source(data):
        raise ValueError(
            "missing='marginalize' fits data held in memory; data read in chunks (chunk_size=) or "
            "streamed in minibatches are not supported with it."
        )
    return missing


def fit_class(gm: GenerativeModel) -> type[Fit]:
    """The class of ``gm``'s fits: its family's ``fit_class`` (a ``Fit`` subclass), else ``Fit``."""
    cls = gm.fit_class
    if cls is None:
        return Fit
    if not (isinstance(cls, type) and issubclass(cls, Fit)):
        raise TypeError(f"{gm.name}.fit_class must be a subclass of probgen.Fit; got {cls!r}.")
    return cls


def document_options() -> None:
    """Write every registered backend's declared options into ``help(probgen.fit)``."""
    table = options_table().replace("\n", "\n        ")
    if fit.__doc__ is not None and "{options}" in fit.__doc__:
        fit.__doc__ = fit.__doc__.replace("{options}", table)


def _check_device(device: Any) -> torch.device | None:
    """Validate ``device=`` at the boundary: a known device that this machine has."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: torch.cuda.is_available() is False on this machine; use 'cpu'.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={device!r}: probgen fits on 'cpu' or 'cuda' devices; got type {dev.type!r}."
        )
    return dev


def _to_device(data: Any, device: torch.device) -> Any:
    if isinstance(data, Tensor):
        return data.to(device)
    return type(data)(_to_device(d, device) for d in data)


@contextlib.contextmanager
def _nothing() -> Any:
    yield


def interactive() -> bool:
    """Whether progress bars would be seen: standard error is a terminal, or a notebook runs."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Fit(FitResult):
    """What every backend returns: estimates, draws, history, and every tool of a fit.

    The attributes are those of :class:`probgen.result.FitResult` (``model``, ``data``,
    ``method``, ``params``, ``posterior``, ``history``, ``converged``, ``sample_stats``,
    ``log_evidence``, ``extras``, ``seed``); this class adds ArviZ, summaries, saving and pictures.

    A fit is immutable: its mappings are read-only views.  ``Fit(model=...)`` builds the class
    of the model's family (its ``fit_class``), so every fit of a family has the family's helpers.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Fit:
        model = kwargs["model"] if "model" in kwargs else (args[0] if args else None)
        if cls is Fit and isinstance(model, GenerativeModel):
            cls = fit_class(model)
        return super().__new__(cls)

    # ------------------------------------------------------------------- ArviZ, I/O
    def to_arviz(
        self,
        *,
        posterior_predictive: bool = False,
        num_ppc_samples: int | None = None,
        prior: bool = False,
        num_prior_samples: int | None = None,
        warmup: bool = False,
    ) -> Any:
        """ArviZ ``InferenceData`` (a ``DataTree`` with the arviz-base line) of this fit.

        Groups: ``posterior``, ``sample_stats`` (MCMC: ``lp``, ``energy``, ``step_size``,
        ``n_steps``, ``tree_depth``, ``acceptance_rate``, ``diverging`` per draw, as
        ``arviz.from_numpyro`` names them; SVI: ``loss`` over a ``step`` dim; EM: the
        ``log_likelihood`` history over an ``iteration`` dim), ``log_likelihood`` (pointwise per
        data item, discrete latents summed out), ``observed_data`` and, for models of several
        arguments, ``constant_data``.  Dims are named after the model's plates (``components``,
        ``data``, ...) and the family's event dims (``features``); a DataFrame's column names
        are the coordinates of the feature dim.

        Point fits convert as one chain of one draw; their log_likelihood group says so in its
        attrs (LOO needs posterior draws: ``probgen.compare`` ranks point fits by BIC).

        Parameters
        ----------
        posterior_predictive : bool, default False
            Add ``posterior_predictive``: one replicate of the observed sites per draw.
        num_ppc_samples : int, optional
            Thin the replicates to this many draws (then in one chain).
        prior : bool, default False
            Add ``prior`` (latent sites) and ``prior_predictive`` (observed sites), drawn from
            the model's prior with Pyro's ``Predictive``.
        num_prior_samples : int, optional
            Prior draws (default 500).
        warmup : bool, default False
            Add ``warmup_posterior`` and ``warmup_sample_stats``: the warm-up draws of an MCMC fit
            run with ``save_warmup=True`` (others raise ``ValueError``), named as ArviZ names
            them (``arviz.from_cmdstanpy(save_warmup=True)``).
        """
        return to_inference_data(
            self,
            posterior_predictive=posterior_predictive,
            num_ppc_samples=num_ppc_samples,
            prior=prior,
            num_prior_samples=num_prior_samples,
            warmup=warmup,
        )

    def plot(self, data: Any = None, *, ax: Any = None, **kwargs: Any) -> Any:
        """Picture of the fitted model over ``data`` (default: the training data).

        Every family draws what suits it: mixtures their components over the data, HMMs one
        sequence over its state strips, networks their graph, VAEs their latent space with
        reconstructions, RBMs their filters and free energies, GANs samples beside the data,
        CharRNNs the surprisal of each character.  A model with no picture of its own (a user's
        ``probgen.model``) shows its global latent sites (a forest of the posterior, or bars
        of point estimates) beside a predictive check of its observed site.

        Parameters
        ----------
        data : optional
            Data as the model takes them (default: the training data).
        ax : matplotlib.axes.Axes, optional
            Axes of the main panel; a new figure when None.
        **kwargs
            The family's own options (see its ``plot_fit``); a user's model takes
            ``var_names`` (global sites to show) and ``num_ppc_samples`` (default 50).

        Returns
        -------
        matplotlib.axes.Axes
            The main panel.  Pictures of several panels put the others on the same figure
            (``ax.figure.axes``), carved out of ``ax`` when it is given.

        Raises
        ------
        TypeError
            Options the picture does not take, ``ax`` not matplotlib axes.
        """
        if not isinstance(self.model, Plottable):
            return plot_fit_fallback(self, self._data(data), ax=ax, **kwargs)
        return self.model.plot_fit(self._data(data), self.params, ax=ax, **kwargs)

    def summary(self) -> pd.DataFrame:
        """Same as ``probgen.summary(fit)``."""
        return _summary(self)

    def save(self, path: Any) -> None:
        """Save to ``path`` (a ``.npz`` of tensors plus JSON metadata; no pickle)."""
        save_fit(self, path)


setattr(Fit, "to_arviz", serialised(Fit.to_arviz))  # noqa: B010  (Pyro runs inside: threads take turns)


@serialised
def load(path: str | os.PathLike[str], model: Any = None) -> Fit:
    """Read a fit written by :meth:`Fit.save`; never runs code from the file.

    Parameters
    ----------
    path : str or PathLike
    model : GenerativeModel, optional
        Required for user-written models (their code is not stored); families from
        ``probgen.models`` are rebuilt from their saved configuration.
    """
    saved = read_saved(Path(path))
    meta = saved.meta
    saved_class, config = meta["model"]["class"], meta["model"].get("config")
    if model is None:
        cls = registered_model(saved_class)
        if cls is None or config is None:
            raise ValueError(
                f"the fit in {str(saved.path)!r} is of a user-written model ({meta['model'].get('name')!r}); "
                "pass it again: probgen.load(path, model=my_model)."
            )
        check_config_sizes(config, saved.files, saved.path)
        try:
            model = cls(**config)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{str(saved.path)!r}: its model configuration does not build a {saved_class}: {err}"
            ) from None
    gm = model if isinstance(model, GenerativeModel) else as_model(model)
    _check_same_model(gm, saved_class, config, saved.path)
    try:
        fields = saved.fields(gm)
        result = fit_class(gm)(model=gm, **fields)
        _trial(result)
    except (RuntimeError, IndexError, KeyError, AssertionError, ValueError) as err:
        raise ValueError(
            f"{str(saved.path)!r}: the saved arrays do not fit {gm!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300] if str(err) else ''}); was it saved from another model or changed?"
        ) from None
    return result


def _check_same_model(gm: GenerativeModel, saved_class: str, config: Any, path: Path) -> None:
    """The model given to :func:`load` is the one the fit was saved from (class and configuration)."""
    if saved_class != type(gm).__name__:
        raise ValueError(
            f"{str(path)!r} holds a fit of a {saved_class}; the model given is a {type(gm).__name__}."
        )
    mine = gm.get_config()
    if config is None or mine is None:
        return
    mine = json.loads(json.dumps(mine))  # the form the file keeps (tuples as lists)
    differ = sorted(k for k in set(mine) | set(config) if mine.get(k) != config.get(k))
    if differ:
        pairs = ", ".join(f"{k}: saved {config.get(k)!r}, given {mine.get(k)!r}" for k in differ)
        raise ValueError(f"{str(path)!r} was saved from another configuration of {saved_class} ({pairs}).")


#: A loaded fit's trial evaluation scores its whole data up to this many items, else two items.
_TRIAL_ALL = 1000


def _trial(fit: Fit) -> None:
    """Evaluate a loaded fit once, so that arrays of the wrong shape fail here, named, not later.

    The whole data when they are small (a model whose plate has a fixed size, as eight schools'
    has, scores no other number of items), else the first two items.
    """
    if fit.data is None or fit.model.density != "normalised":
        return
    d = fit.data
    if not isinstance(d, Tensor | ModelArgs):
        return
    with torch.no_grad():
        items = fit.model.num_items(d)
        if items <= _TRIAL_ALL or items != len(d) or (isinstance(d, ModelArgs) and not d.per_item):
            fit.log_prob()
        elif isinstance(d, Tensor):
            fit.log_prob(d[:2])
        else:
            fit.log_prob(dict(d.take(torch.arange(2)).values))
