"""Saving and loading fits in safe formats: a ``.npz`` of arrays plus JSON metadata.

Nothing is pickled; loading reads arrays (``allow_pickle=False``) and JSON, and rebuilds the model
only from classes registered in ``probgen.models`` (or takes the model from the caller, for
user-written functions, whose code is never stored).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["load", "save"]

_FORMAT = "probgen-fit/1"


def _arrays(prefix: str, d: dict[str, Any] | None, out: dict[str, np.ndarray]) -> list[str]:
    names = []
    for k, v in (d or {}).items():
        if isinstance(v, torch.Tensor):
            out[f"{prefix}/{k}"] = v.detach().cpu().numpy()
            names.append(k)
        elif isinstance(v, np.ndarray) and v.dtype != object:
            out[f"{prefix}/{k}"] = v
            names.append(k)
    return names


def save(fit: Any, path: str | os.PathLike[str]) -> None:
    """Write ``fit`` to ``path`` (``.npz`` added when missing); nothing partial is left on error."""
    from probgen.fit import Fit

    if not isinstance(fit, Fit):
        raise TypeError(f"fit must be a probgen.Fit; got {type(fit).__name__}.")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    arrays: dict[str, np.ndarray] = {}
    config_fn = getattr(fit.model, "get_config", None)
    model_meta: dict[str, Any] = {"class": type(fit.model).__name__, "name": fit.model.name}
    if callable(config_fn):
        model_meta["config"] = config_fn()
    extras_meta: dict[str, Any] = {}
    for key, value in fit.extras.items():
        if isinstance(value, dict):
            names = _arrays(f"extras.{key}", value, arrays)
            if names:
                extras_meta[key] = names
        elif isinstance(value, bool | int | float | str):
            extras_meta[key] = value
    meta = {
        "format": _FORMAT,
        "method": fit.method,
        "converged": bool(fit.converged),
        "log_evidence": fit.log_evidence,
        "seed": int(fit.seed),
        "model": model_meta,
        "params": _arrays("params", fit.params, arrays),
        "posterior": _arrays("posterior", fit.posterior, arrays) if fit.posterior is not None else None,
        "sample_stats": _arrays("sample_stats", fit.sample_stats, arrays) if fit.sample_stats else None,
        "extras": extras_meta,
        "has_data": isinstance(fit.data, torch.Tensor),
    }
    arrays["history"] = np.asarray(fit.history, dtype=float)
    if isinstance(fit.data, torch.Tensor):
        arrays["data"] = fit.data.detach().cpu().numpy()
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | os.PathLike[str], model: Any = None) -> Any:
    """Read a fit written by :meth:`Fit.save`; never runs code from the file.

    Parameters
    ----------
    path : str or PathLike
    model : GenerativeModel, optional
        Required for user-written models (their code is not stored); families from
        ``probgen.models`` are rebuilt from their saved configuration.
    """
    from probgen.fit import Fit
    from probgen.model import GenerativeModel
    from probgen.model import model as as_model

    path = Path(path)
    if not path.exists() and path.with_suffix(path.suffix + ".npz").exists():
        path = path.with_suffix(path.suffix + ".npz")
    if not path.exists():
        raise FileNotFoundError(f"no saved fit at {str(path)!r}")
    with np.load(path, allow_pickle=False) as npz:
        files = {k: npz[k] for k in npz.files}
    if "__meta__" not in files:
        raise ValueError(f"{str(path)!r} is not a probgen fit (no metadata).")
    meta = json.loads(files["__meta__"].tobytes().decode())
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}; expected {_FORMAT!r}.")
    if model is None:
        import probgen.models as families

        cls_name = meta["model"]["class"]
        cls = getattr(families, cls_name, None) if cls_name in getattr(families, "__all__", ()) else None
        if cls is None or "config" not in meta["model"]:
            raise ValueError(
                f"the fit in {str(path)!r} is of a user-written model ({meta['model']['name']!r}); "
                "pass it again: probgen.load(path, model=my_model)."
            )
        model = cls(**meta["model"]["config"])
    gm = model if isinstance(model, GenerativeModel) else as_model(model)

    def tensors(prefix: str, names: list[str] | None) -> dict[str, torch.Tensor] | None:
        if names is None:
            return None
        return {n: torch.from_numpy(files[f"{prefix}/{n}"].copy()) for n in names}

    data = gm.prepare_data(files["data"]) if meta.get("has_data") else None
    extras: dict[str, Any] = {}
    for key, value in meta.get("extras", {}).items():
        extras[key] = tensors(f"extras.{key}", value) if isinstance(value, list) else value
    stats = meta.get("sample_stats")
    if data is not None:
        gm.roles(data)
    return Fit(
        model=gm,
        data=data,
        method=meta["method"],
        params=tensors("params", meta["params"]) or {},
        posterior=tensors("posterior", meta["posterior"]),
        history=files["history"],
        converged=meta["converged"],
        sample_stats={n: files[f"sample_stats/{n}"] for n in stats} if stats else None,
        log_evidence=meta["log_evidence"],
        extras=extras,
        seed=meta["seed"],
    )
