"""A restricted Boltzmann machine for scikit-learn: ``RBM``, ``BernoulliRBM``'s interface."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

import probgen as pg
from probgen.models import RBM as _RBMFamily
from probgen.sklearn._base import (
    _FLOATS,
    _check_int,
    _check_number,
    _Estimator,
    _numpy,
    _seed,
)


# ------------------------------------------------------------------------------ RBM
class _UnitIntervalRBM(_RBMFamily):
    """The family's RBM on visible values in [0, 1] (probabilities of a unit being on), as
    scikit-learn's ``BernoulliRBM`` reads them; contrastive divergence needs nothing more."""

    def prepare_data(self, data: Any) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(data, dtype=np.float32))
        if x.dim() != 2 or x.shape[1] != self.n_visible:
            raise ValueError(f"data must have shape (n_items, {self.n_visible}); got {tuple(x.shape)}.")
        return x


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


class RBM(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _Estimator):
    """Bernoulli restricted Boltzmann machine: scikit-learn's ``BernoulliRBM`` over probgen's RBM.

    Fitted by probgen's contrastive divergence (``method="cd"``, persistent chains).  ``X`` holds
    values in [0, 1], binary or the probability of each unit being on.  :meth:`transform`,
    :meth:`gibbs` and :meth:`score_samples` (the pseudo-log-likelihood, one random unit flipped
    per row, drawn from ``random_state`` as ``BernoulliRBM`` draws it) have ``BernoulliRBM``'s
    meaning, so at the same parameters they give its numbers.  ``fit_.log_prob(x)`` gives the
    exact log-likelihood of binary rows (``fit_.log_partition()`` for ``log Z``).

    Parameters
    ----------
    n_components : int, default 256
        Hidden units.
    learning_rate : float, default 0.05
        Learning rate (decayed linearly to a tenth over the run).
    batch_size : int, default 20
        Rows per update.
    n_iter : int, optional
        Passes over the data (epochs); default: the CD backend's 3000 updates.
    momentum : float, default 0.5
        SGD momentum (``BernoulliRBM`` uses none: pass 0).
    random_state : int, RandomState or None, default None
    verbose : int, default 0

    Attributes
    ----------
    components_ : numpy.ndarray of shape (n_components, n_features)
        Weights ``W``.
    intercept_hidden_ : numpy.ndarray of shape (n_components,)
    intercept_visible_ : numpy.ndarray of shape (n_features,)
    n_iter_ : int
        Passes over the data made (epochs; the last may be partial).
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str
    fit_ : probgen.Fit

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.sklearn import RBM
    >>> X = (np.random.default_rng(0).uniform(size=(40, 6)) > 0.5).astype(float)
    >>> rbm = RBM(3, n_iter=5, random_state=0).fit(X)
    >>> rbm.transform(X).shape
    (40, 3)
    """

    def __init__(
        self,
        n_components: int = 256,
        *,
        learning_rate: float = 0.05,
        batch_size: int = 20,
        n_iter: int | None = None,
        momentum: float = 0.5,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.momentum = momentum
        self.random_state = random_state
        self.verbose = verbose

    def _validate(self, X: Any, *, reset: bool) -> np.ndarray:
        X = np.array(validate_data(self, X, dtype=_FLOATS, reset=reset), dtype=np.float64)
        if X.size and (X.min() < 0 or X.max() > 1):
            bad = X[(X < 0) | (X > 1)].ravel()[0]
            raise ValueError(
                f"X must hold values in [0, 1] (binary units or their probabilities of being on); got {bad!r}."
            )
        return X

    def _model_for_load(self) -> Any:
        return _UnitIntervalRBM(int(self.n_features_in_), int(self.n_components))

    @property
    def _n_features_out(self) -> int:
        return int(self.components_.shape[0])

    def fit(self, X: Any, y: Any = None) -> RBM:
        """Fit by persistent contrastive divergence.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Values in [0, 1].
        y : ignored

        Returns
        -------
        RBM
            This estimator, fitted.

        Raises
        ------
        ValueError
            Values outside [0, 1], NaN, or parameters out of range.
        """
        X = self._validate(X, reset=True)
        n_hidden = _check_int(self.n_components, "n_components")
        batch = min(_check_int(self.batch_size, "batch_size"), len(X))
        options: dict[str, Any] = {
            "lr": _check_number(self.learning_rate, "learning_rate", positive=True),
            "subsample_size": batch,
            "momentum": self.momentum,
        }
        if self.n_iter is not None:
            options["num_steps"] = _check_int(self.n_iter, "n_iter") * math.ceil(len(X) / batch)
        model = _UnitIntervalRBM(X.shape[1], n_hidden)
        seed = _seed(self.random_state)
        fit: pg.Fit = pg.fit(model, X, method="cd", seed=seed, progress=self._progress(), **options)
        self.fit_ = fit
        self.components_ = _numpy(fit.params["W"])
        self.intercept_hidden_ = _numpy(fit.params["hidden_bias"])
        self.intercept_visible_ = _numpy(fit.params["visible_bias"])
        self.n_iter_ = len(fit.history)  # one value per pass over the data
        self.random_state_ = np.random.RandomState(seed)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Hidden activation probabilities ``p(h_j = 1 | x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples, n_components)
        """
        check_is_fitted(self)
        return self._mean_hiddens(self._validate(X, reset=False))

    def _mean_hiddens(self, v: np.ndarray) -> np.ndarray:
        return np.exp(_log_sigmoid(v @ self.components_.T + self.intercept_hidden_))

    def free_energy(self, X: Any) -> np.ndarray:
        """Free energy ``F(x) = -x.b - sum_j softplus(c_j + W_j x)`` of each row (float64).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples,)
        """
        check_is_fitted(self)
        return self._free_energy(self._validate(X, reset=False))

    def _free_energy(self, v: np.ndarray) -> np.ndarray:
        act = v @ self.components_.T + self.intercept_hidden_
        return -(v @ self.intercept_visible_) - np.logaddexp(0.0, act).sum(axis=1)

    def gibbs(self, v: Any) -> np.ndarray:
        """One Gibbs sweep from ``v``: hidden units drawn given ``v``, then visible units given them.

        Draws from ``random_state_`` (seeded by ``random_state`` at fit), so successive calls
        continue one stream, as ``BernoulliRBM.gibbs`` does.

        Parameters
        ----------
        v : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples, n_features)
            Binary values.
        """
        check_is_fitted(self)
        v = self._validate(v, reset=False)
        rng = self.random_state_
        p_h = self._mean_hiddens(v)
        h = (rng.uniform(size=p_h.shape) < p_h).astype(np.float64)
        p_v = np.exp(_log_sigmoid(h @ self.components_ + self.intercept_visible_))
        return (rng.uniform(size=p_v.shape) < p_v).astype(np.float64)

    def score_samples(self, X: Any) -> np.ndarray:
        """Pseudo-log-likelihood of each row: ``n_features * log sigmoid(F(x~) - F(x))`` with one
        unit of each row flipped in ``x~`` (the unit drawn from ``random_state``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples,)
        """
        check_is_fitted(self)
        v = self._validate(X, reset=False)
        rng = check_random_state(self.random_state)
        flip = (np.arange(v.shape[0]), rng.randint(0, v.shape[1], v.shape[0]))
        flipped = v.copy()
        flipped[flip] = 1.0 - flipped[flip]
        return v.shape[1] * _log_sigmoid(self._free_energy(flipped) - self._free_energy(v))

    def score(self, X: Any, y: Any = None) -> float:
        """Mean pseudo-log-likelihood per row (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        float
        """
        return float(self.score_samples(X).mean())

    def sample(self, n_samples: int = 1, *, burn_in: int = 1000) -> np.ndarray:
        """Draw rows by independent Gibbs chains of ``burn_in`` sweeps each.

        Parameters
        ----------
        n_samples : int, default 1
        burn_in : int, default 1000

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples, n_features)
        """
        check_is_fitted(self)
        _check_int(n_samples, "n_samples")
        seed = _seed(self.random_state)
        return _numpy(self.fit_.sample(int(n_samples), seed=seed, burn_in=burn_in))
