"""Saving and loading fits in safe formats: a ``.npz`` of arrays plus JSON metadata.

Nothing is pickled; loading reads arrays (``allow_pickle=False``) and JSON, and rebuilds the model
only from classes registered in ``probgen.models`` (or takes the model from the caller, for
user-written functions, whose code is never stored).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probgen.arguments import ModelArgs
from probgen.capabilities import DataArrays, MissingValues
from probgen.result import FitResult

if TYPE_CHECKING:  # pragma: no cover
    from probgen.model import GenerativeModel

__all__ = ["Saved", "check_config_sizes", "data_from_arrays", "data_to_arrays", "read_saved", "save_fit"]


def data_to_arrays(gm: GenerativeModel, data: Any) -> dict[str, torch.Tensor]:
    """The prepared data as named tensors (the family's own when it offers DataArrays)."""
    if isinstance(gm, DataArrays):
        return gm.data_to_arrays(data)
    if isinstance(data, ModelArgs):  # each argument by name; Python scalars as 0-d tensors
        out = {f"arg:{k}": v for k, v in data.values.items() if isinstance(v, torch.Tensor)}
        out.update(
            {
                f"scalar:{k}": torch.tensor(v)
                for k, v in data.values.items()
                if isinstance(v, bool | int | float)
            }
        )
        return out
    return {"data": data} if isinstance(data, torch.Tensor) else {}


def data_from_arrays(gm: GenerativeModel, arrays: dict[str, torch.Tensor], *, missing: bool = False) -> Any:
    """Prepared data rebuilt from :func:`data_to_arrays`' tensors (``None`` when absent);
    ``missing``: the fit was made with ``missing="marginalize"`` (NaN kept as missing cells)."""
    if missing and isinstance(gm, MissingValues) and "data" in arrays:
        return gm.prepare_missing(arrays["data"])
    if isinstance(gm, DataArrays):
        return gm.data_from_arrays(arrays)
    if any(k.startswith(("arg:", "scalar:")) for k in arrays):
        values: dict[str, Any] = {k[4:]: v for k, v in arrays.items() if k.startswith("arg:")}
        values.update({k[7:]: v.item() for k, v in arrays.items() if k.startswith("scalar:")})
        return (
            gm.prepare_missing(values)
            if missing and isinstance(gm, MissingValues)
            else gm.prepare_data(values)
        )
    return gm.prepare_data(arrays["data"]) if "data" in arrays else None


_FORMAT = "probgen-fit/1"
_FORMAT_PREFIX, _FORMAT_VERSION = "probgen-fit/", 1
#: A whole number in a saved model configuration above this must be the size of some array in the
#: file (components, hidden units, states): a config asking for more is refused before the model
#: is built, so a crafted file cannot make loading allocate memory it never uses.
_LARGE = 65536


def _arrays(prefix: str, d: Mapping[str, Any] | None, out: dict[str, np.ndarray]) -> list[str]:
    names = []
    for k, v in (d or {}).items():
        if isinstance(v, torch.Tensor):
            out[f"{prefix}/{k}"] = v.detach().cpu().numpy()
            names.append(k)
        elif isinstance(v, np.ndarray) and v.dtype != object:
            out[f"{prefix}/{k}"] = v
            names.append(k)
    return names


def save_fit(fit: Any, path: str | os.PathLike[str]) -> None:
    """Write ``fit`` to ``path`` (``.npz`` added when missing); nothing partial is left on error."""
    if not isinstance(fit, FitResult):
        raise TypeError(f"fit must be a probgen.Fit; got {type(fit).__name__}.")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    arrays: dict[str, np.ndarray] = {}
    model_meta: dict[str, Any] = {
        "class": type(fit.model).__name__,
        "name": fit.model.name,
        "config": fit.model.get_config(),
    }
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
        "data": _arrays("data", data_to_arrays(fit.model, fit.data) if fit.data is not None else {}, arrays),
    }
    arrays["history"] = np.asarray(fit.history, dtype=float)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """The metadata's fields have the types :func:`save_fit` writes (else the file is damaged)."""
    where = f"{str(path)!r} is damaged"
    for key in ("model", "method", "converged", "seed"):
        if key not in meta:
            raise ValueError(f"{where}: its metadata lacks {key!r}.")
    model = meta["model"]
    if not isinstance(model, dict) or not isinstance(model.get("class"), str):
        raise ValueError(f"{where}: its metadata's 'model' is not a record with a class name.")
    if model.get("config") is not None and not isinstance(model["config"], dict):
        raise ValueError(f"{where}: its model configuration is not a mapping.")
    if not isinstance(meta["method"], str) or not isinstance(meta["converged"], bool):
        raise ValueError(f"{where}: its metadata's 'method' or 'converged' has the wrong type.")
    if isinstance(meta["seed"], bool) or not isinstance(meta["seed"], int):
        raise ValueError(f"{where}: its metadata's 'seed' is not an integer.")
    for group in ("params", "posterior", "sample_stats", "data"):
        names = meta.get(group)
        if group == "params" and names is None:
            raise ValueError(f"{where}: its metadata lacks 'params'.")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{where}: its metadata's {group!r} is not a list of array names.")
    extras = meta.get("extras", {})
    if not isinstance(extras, dict):
        raise ValueError(f"{where}: its metadata's 'extras' is not a mapping.")
    if meta.get("log_evidence") is not None and not isinstance(meta["log_evidence"], int | float):
        raise ValueError(f"{where}: its metadata's 'log_evidence' is not a number.")


def _check_finite(meta: dict[str, Any], files: dict[str, np.ndarray], path: Path) -> None:
    """Estimates and draws hold finite numbers (a tampered file may hold NaN; data are checked
    when the model prepares them, where a network reads NaN as missing)."""
    for group in ("params", "posterior"):
        for n in meta.get(group) or []:
            a = files[f"{group}/{n}"]
            if a.dtype.kind == "f" and not bool(np.isfinite(a).all()):
                raise ValueError(
                    f"{str(path)!r} is damaged: {group} array {n!r} holds NaN or infinite values "
                    "(save_fit writes finite numbers only)."
                )


def check_config_sizes(config: Mapping[str, Any] | None, files: Mapping[str, np.ndarray], path: Path) -> None:
    """Refuse a configuration whose large sizes no array in the file has (before building a model)."""
    dims = {int(d) for a in files.values() for d in np.shape(a)}

    def ints(value: Any) -> list[int]:
        if isinstance(value, bool):
            return []
        if isinstance(value, int):
            return [value]
        if isinstance(value, list | tuple):
            return [i for v in value for i in ints(v)]
        if isinstance(value, dict):
            return [i for v in value.values() for i in ints(v)]
        return []

    for key, value in (config or {}).items():
        for size in ints(value):
            if size > _LARGE and size not in dims:
                raise ValueError(
                    f"{str(path)!r}: its model configuration asks for {key}={value!r}, a size no array in the "
                    "file has; the file is damaged or crafted, and the model is not built."
                )


def _check_complete(meta: dict[str, Any], files: dict[str, np.ndarray], path: Path) -> None:
    """Every array the metadata names is present and numeric (else the file is damaged)."""
    _check_meta(meta, path)
    needed = ["history"]
    for group in ("params", "posterior", "sample_stats", "data"):
        needed += [f"{group}/{n}" for n in meta.get(group) or []]
    for key, names in (meta.get("extras") or {}).items():
        if isinstance(names, list):
            needed += [f"extras.{key}/{n}" for n in names]
    absent = [k for k in needed if k not in files]
    if absent:
        raise ValueError(f"{str(path)!r} is damaged: arrays {absent[:5]} are missing.")
    bad = [k for k in needed if files[k].dtype.kind not in "biuf"]
    if bad:
        raise ValueError(f"{str(path)!r} is damaged: arrays {bad[:5]} are not numeric.")
    _check_finite(meta, files, path)


@dataclass(frozen=True)
class Saved:
    """A saved fit as read from disk: its metadata and arrays, checked complete."""

    path: Path
    meta: dict[str, Any]
    files: dict[str, np.ndarray]

    def _tensors(self, prefix: str, names: list[str] | None) -> dict[str, torch.Tensor] | None:
        if names is None:
            return None
        return {n: torch.from_numpy(self.files[f"{prefix}/{n}"].copy()) for n in names}

    def fields(self, gm: GenerativeModel) -> dict[str, Any]:
        """The fit's fields (all but ``model``) for the model ``gm`` the fit is rebuilt with."""
        meta, files = self.meta, self.files
        extras: dict[str, Any] = {}
        for key, value in meta.get("extras", {}).items():
            extras[key] = self._tensors(f"extras.{key}", value) if isinstance(value, list) else value
        missing = extras.get("missing") == "marginalize"
        if isinstance(meta.get("data"), list):
            data = data_from_arrays(gm, self._tensors("data", meta["data"]) or {}, missing=missing)
        elif meta.get("has_data") and "data" in files:  # files written before data were named arrays
            data = gm.prepare_data(files["data"])
        else:
            data = None
        stats = meta.get("sample_stats")
        if data is not None:
            gm.roles(data)
        return {
            "data": data,
            "method": meta["method"],
            "params": self._tensors("params", meta["params"]) or {},
            "posterior": self._tensors("posterior", meta["posterior"]),
            "history": files["history"],
            "converged": meta["converged"],
            "sample_stats": {n: files[f"sample_stats/{n}"] for n in stats} if stats else None,
            "log_evidence": meta["log_evidence"],
            "extras": extras,
            "seed": meta["seed"],
        }


def read_saved(path: Path) -> Saved:
    """Read and check a file written by :func:`save_fit` (``.npz`` tried when missing)."""
    if not path.exists() and path.with_suffix(path.suffix + ".npz").exists():
        path = path.with_suffix(path.suffix + ".npz")
    if not path.exists():
        raise FileNotFoundError(f"no saved fit at {str(path)!r}")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        # numpy reads any other bytes as a pickle and advises allowing it: never; say what it is
        what = (
            "it holds pickled data, which probgen never loads"
            if head[:1] == b"\x80"
            else f"it is neither a zip archive nor a .npy array (it starts with {head!r})"
        )
        raise ValueError(
            f"{str(path)!r} is not a readable probgen fit (a .npz archive written by Fit.save): {what}."
        )
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):  # one bare array (a .npy), not an archive of a fit
                raise ValueError("one array, not an archive")
            files = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        # numpy's own text for a pickle (advice to allow it) is not advice to give: never load one
        reason = "it holds pickled data, which probgen never loads" if "pickle" in str(err) else str(err)
        raise ValueError(
            f"{str(path)!r} is not a readable probgen fit (a .npz archive written by Fit.save): {reason}."
        ) from None
    raw = [k for k, v in files.items() if not isinstance(v, np.ndarray)]
    if raw:  # an archive member that is not a .npy array (numpy hands back its bytes)
        raise ValueError(f"{str(path)!r} is damaged: members {raw[:5]} are not arrays.")
    if "__meta__" not in files:
        raise ValueError(f"{str(path)!r} is not a probgen fit (no metadata).")
    try:
        meta = json.loads(files["__meta__"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is damaged: its metadata is not JSON ({err}).") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        version = (
            found[len(_FORMAT_PREFIX) :]
            if isinstance(found, str) and found.startswith(_FORMAT_PREFIX)
            else ""
        )
        if version.isdigit() and int(version) > _FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} was written by a newer probgen (format {found!r}); this version reads "
                f"{_FORMAT!r}: upgrade probgen to load it."
            )
        raise ValueError(f"{str(path)!r} has format {found!r}; expected {_FORMAT!r}.")
    _check_complete(meta, files, path)
    return Saved(path, meta, files)
