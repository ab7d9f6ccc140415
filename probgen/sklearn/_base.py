"""What the scikit-learn estimators share: argument checks, seeds, and pickling of a fit in probgen's safe format."""

from __future__ import annotations

import math
import numbers
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator
    from sklearn.utils.validation import check_random_state, validate_data  # noqa: F401  (>= 1.6)
except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "probgen.sklearn needs scikit-learn >= 1.6, an optional dependency of probgen: "
        'pip install "probgen[sklearn]" (or pip install scikit-learn).'
    ) from err

import probgen as pg

_FLOATS = (np.float64, np.float32)
_SEED_BOUND = 2**31 - 1


# ------------------------------------------------------------------------------- helpers
def _seed(random_state: Any) -> int:
    """The probgen seed of ``random_state``: an int as it is, else one drawn from it."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= int(random_state) < 2**32:
            raise ValueError(f"random_state must be an int in [0, 2**32); got {random_state!r}.")
        return int(random_state)
    if random_state is not None and not isinstance(random_state, np.random.RandomState):
        raise TypeError(
            f"random_state must be None, an int or a numpy.random.RandomState; got {type(random_state).__name__}."
        )
    return int(check_random_state(random_state).randint(_SEED_BOUND))


def _numpy(t: Any, dtype: Any = np.float64) -> np.ndarray:
    """A tensor (or array) as a numpy array of ``dtype``."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=dtype)


def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}.")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def _check_number(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}.")
    number = float(value)
    ok = number > 0 if positive else number >= 0
    if not ok or not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}; got {value!r}.")
    return number


def _check_codes(X: np.ndarray, name: str = "X") -> np.ndarray:
    """Non-negative integer codes (any numeric dtype holding whole numbers) as int64."""
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold integer codes; got dtype {X.dtype}.")
    if X.size and np.any(X < 0):
        raise ValueError(
            f"Negative values in data passed to {name}: it must hold non-negative integer codes "
            f"(category or symbol numbers); got {X[X < 0].ravel()[0]!r}."
        )
    if X.size and np.any(X != np.floor(X)):
        bad = X[X != np.floor(X)].ravel()[0]
        raise ValueError(
            f"{name} must hold non-negative integer codes (category or symbol numbers); got {bad!r}."
        )
    return X.astype(np.int64)


def _fit_to_bytes(fit: pg.Fit) -> np.ndarray:
    """The fit in probgen's safe format (``Fit.save``: arrays and JSON), as a byte array."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.npz"
        fit.save(path)
        return np.frombuffer(path.read_bytes(), dtype=np.uint8).copy()


def _fit_from_bytes(raw: np.ndarray, model: Any) -> pg.Fit:
    """A fit rebuilt from :func:`_fit_to_bytes`' bytes (no code is run)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.npz"
        path.write_bytes(np.asarray(raw, dtype=np.uint8).tobytes())
        return pg.load(path, model=model)


class _Estimator(BaseEstimator):
    """What every estimator shares: seeds, progress, and pickling of ``fit_`` in a safe format."""

    fit_: pg.Fit

    def _progress(self) -> bool:
        return bool(getattr(self, "verbose", 0))

    def _model_for_load(self) -> Any:
        """The model :func:`probgen.load` rebuilds the fit with (None: from the saved configuration)."""
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        fit = state.pop("fit_", None)
        if fit is not None:
            state["fit_npz_"] = _fit_to_bytes(fit)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        raw = state.pop("fit_npz_", None)
        super().__setstate__(state)
        if raw is not None:
            self.fit_ = _fit_from_bytes(raw, self._model_for_load())
