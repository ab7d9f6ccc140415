"""scikit-learn estimators over probgen's families: ``get_params``, ``fit(X)``, numpy out.

Each estimator is a thin layer over one family of :mod:`probgen.models` fitted by
:func:`probgen.fit`: its constructor only stores its arguments (scikit-learn's ``BaseEstimator``
conventions, so ``clone``, ``Pipeline`` and ``GridSearchCV`` work), ``fit`` validates the data,
builds the family, fits it and keeps the result as ``fit_`` (a :class:`probgen.Fit`) beside
fitted attributes with scikit-learn's and hmmlearn's names (``weights_``, ``means_``,
``covariances_``, ``transmat_``, ...).  Every output is a numpy array (float64 for
probabilities, scores and draws).

=========================== ============================================ ==========================
Estimator                   Family and backend                           Reference API
=========================== ============================================ ==========================
``GaussianMixture``         ``GaussianMixture``, EM                      ``sklearn.mixture``
``BayesianGaussianMixture`` ``GaussianMixture``, SVI or MCMC             posterior averages
``GaussianHMM``             ``HiddenMarkovModel`` (Gaussian), EM         ``hmmlearn.hmm``
``CategoricalHMM``          ``HiddenMarkovModel`` (categorical), EM      ``hmmlearn.hmm``
``NaiveBayes``              ``NaiveBayes``, closed-form counts           ``sklearn.naive_bayes``
``RBM``                     ``RBM``, contrastive divergence              ``BernoulliRBM``
=========================== ============================================ ==========================

``random_state`` follows scikit-learn: an int is the seed of the fit (``random_state=0`` fits
as ``probgen.fit(..., seed=0)`` does), ``None`` or a ``numpy.random.RandomState`` draws one.

Pickling and ``skops.io`` store the fit in probgen's own safe format (arrays and JSON, see
:meth:`probgen.Fit.save`): loading rebuilds it without running stored code, so ``skops.io.load``
needs only the estimator's own class among its trusted types.

scikit-learn is an optional dependency (``pip install "probgen[sklearn]"``); ``import probgen``
never needs it.
"""

from __future__ import annotations

import abc
import math
import numbers
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from sklearn.base import (
        BaseEstimator,
        ClassifierMixin,
        ClassNamePrefixFeaturesOutMixin,
        DensityMixin,
        TransformerMixin,
    )
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "probgen.sklearn needs scikit-learn >= 1.6, an optional dependency of probgen: "
        'pip install "probgen[sklearn]" (or pip install scikit-learn).'
    ) from err

import probgen as pg
from probgen.models import RBM as _RBMFamily
from probgen.models import HiddenMarkovModel as _HiddenMarkovModel
from probgen.models import NaiveBayes as _NaiveBayesFamily
from probgen.models.gaussian_mixture import GaussianMixture as _GaussianMixtureFamily

__all__ = ["BayesianGaussianMixture", "CategoricalHMM", "GaussianHMM", "GaussianMixture", "NaiveBayes", "RBM"]

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


# ------------------------------------------------------------------------ Gaussian mixtures
def _precisions(cov: np.ndarray, covariance_type: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``precisions_`` and ``precisions_cholesky_`` from ``covariances_``."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / cov, 1.0 / np.sqrt(cov)
    chol = np.linalg.cholesky(cov)
    eye = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape)
    prec_chol = np.swapaxes(np.linalg.solve(chol, eye), -1, -2)  # inv(L)^T: P = prec_chol prec_chol^T
    return prec_chol @ np.swapaxes(prec_chol, -1, -2), prec_chol


class _MixtureEstimator(DensityMixin, _Estimator, abc.ABC):
    """Tools shared by the Gaussian mixture estimators (fitted from a ``fit_``)."""

    n_components: int
    covariance_type: str
    random_state: Any

    def _validate(self, X: Any, *, reset: bool) -> np.ndarray:
        X = validate_data(self, X, dtype=_FLOATS, ensure_min_samples=2 if reset else 1, reset=reset)
        return np.array(X, dtype=np.float64)

    def _set_fitted(self, fit: pg.Fit, n: int) -> None:
        model = fit.model
        assert isinstance(model, _GaussianMixtureFamily)
        self.fit_ = fit
        p = fit.params
        self.weights_ = _numpy(p["weights"])
        self.means_ = _numpy(p["locs"])
        if fit.posterior:  # the posterior mean of the covariances, never a plug-in of mean sites
            self.covariances_ = _numpy(model.covariances(fit.posterior)).mean(axis=(0, 1))
        else:
            self.covariances_ = _numpy(model.covariances(p))
        self.precisions_, self.precisions_cholesky_ = _precisions(self.covariances_, model.covariance_type)
        self.converged_ = bool(fit.converged)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable component of each item.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of int64, shape (n_samples,)
        """
        check_is_fitted(self)
        return _numpy(self.fit_.predict(self._validate(X, reset=False)), np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior probability of every component for each item.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples, n_components)
        """
        check_is_fitted(self)
        return _numpy(self.fit_.predict_proba(self._validate(X, reset=False)))

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density of each item, components summed out (``probgen.Fit.log_prob``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples,)
        """
        check_is_fitted(self)
        return _numpy(self.fit_.log_prob(self._validate(X, reset=False)))

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-density per item (higher is better; what ``GridSearchCV`` ranks by).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        float
        """
        return float(self.score_samples(X).mean())

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit to ``X``, then return the most probable component of each of its items.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        numpy.ndarray of int64, shape (n_samples,)
        """
        return self.fit(X).predict(X)

    @abc.abstractmethod
    def fit(self, X: Any, y: Any = None) -> Any:
        """Defined by each concrete estimator."""

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw items from the fitted mixture (posterior fits draw parameters first).

        Parameters
        ----------
        n_samples : int, default 1

        Returns
        -------
        X : numpy.ndarray of float64, shape (n_samples, n_features)
        y : numpy.ndarray of int64, shape (n_samples,)
            Component of each draw.
        """
        check_is_fitted(self)
        _check_int(n_samples, "n_samples")
        x, latents = self.fit_.sample(int(n_samples), return_latents=True, seed=_seed(self.random_state))
        return _numpy(x), _numpy(latents["z"], np.int64)


class GaussianMixture(_MixtureEstimator):
    """Gaussian mixture fitted by EM: scikit-learn's ``GaussianMixture`` over probgen's family.

    The family (:class:`probgen.models.GaussianMixture`) runs scikit-learn's EM (the same
    E-step, M-step, ``reg_covar`` and lower bound), so from the same start the two give the same
    iterates.  The defaults differ on purpose: ``tol=1e-8`` and ``max_iter=1000`` (probgen's,
    which converge; scikit-learn's ``tol=1e-3, max_iter=100`` stop short of the optimum on real
    data), and ``init_params="kmeans"`` runs probgen's own k-means.

    Parameters
    ----------
    n_components : int, default 1
        Number of components.
    covariance_type : {"full", "diag", "spherical", "tied"}, default "full"
        Covariance structure, as in scikit-learn.
    tol : float, default 1e-8
        EM stops when the mean log-likelihood per item changes by less than ``tol``.
    reg_covar : float, default 1e-6
        Added to every covariance diagonal in the M-step.
    max_iter : int, default 1000
        EM iterations at most (per start).
    n_init : int, default 1
        Starts; the one with the highest log-likelihood is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default "kmeans"
        How starting responsibilities are drawn (when no ``*_init`` is given).
    weights_init : array-like of shape (n_components,), optional
        Starting weights.
    means_init : array-like of shape (n_components, n_features), optional
        Starting means; with ``weights_init`` alone or on its own, the other parameters come
        from one M-step with every item given to its nearest starting mean.
    precisions_init : array-like, optional
        Starting precisions in scikit-learn's shapes for ``covariance_type``; needs
        ``weights_init`` and ``means_init``.
    random_state : int, RandomState or None, default None
        Seed of the fit (an int is probgen's ``seed``) and of :meth:`sample`.
    verbose : int, default 0
        Show a progress bar when non-zero.

    Attributes
    ----------
    weights_ : numpy.ndarray of shape (n_components,)
    means_ : numpy.ndarray of shape (n_components, n_features)
    covariances_ : numpy.ndarray
        In scikit-learn's shape for ``covariance_type``.
    precisions_, precisions_cholesky_ : numpy.ndarray
        Inverse covariances and their Cholesky factors, as scikit-learn defines them.
    converged_ : bool
    n_iter_ : int
        EM iterations of the kept start.
    lower_bound_ : float
        Mean log-likelihood per item at the last E-step.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    fit_ : probgen.Fit
        The probgen fit (``fit_.params``, ``fit_.to_arviz()``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.sklearn import GaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-3, 1, (50, 2)), rng.normal(3, 1, (50, 2))])
    >>> gm = GaussianMixture(2, random_state=0).fit(X)
    >>> sorted(np.round(gm.means_[:, 0]).tolist())
    [-3.0, 3.0]
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-8,
        reg_covar: float = 1e-6,
        max_iter: int = 1000,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.verbose = verbose

    def _init(self, model: _GaussianMixtureFamily) -> Any:
        """``init`` for probgen's EM: the strategy name, or the starting values by site."""
        given = {"weights": self.weights_init, "locs": self.means_init}
        if self.precisions_init is not None:
            if self.weights_init is None or self.means_init is None:
                raise ValueError("precisions_init needs weights_init and means_init too.")
            prec = np.asarray(self.precisions_init, dtype=np.float64)
            if self.covariance_type in ("full", "tied"):
                cov = np.linalg.inv(prec)
            else:
                if np.any(prec <= 0):
                    raise ValueError("precisions_init must be positive.")
                cov = 1.0 / prec
            return model.params_from_covariances(self.weights_init, self.means_init, cov)
        sites = {k: np.asarray(v, dtype=np.float64) for k, v in given.items() if v is not None}
        return sites or self.init_params

    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Fit the mixture to ``X`` by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Items: numpy arrays, pandas DataFrames, lists.
        y : ignored

        Returns
        -------
        GaussianMixture
            This estimator, fitted.

        Raises
        ------
        ValueError
            NaN or infinite values, fewer than 2 items or fewer items than components, or
            parameters out of range (named in the message).
        TypeError
            Parameters of the wrong type.
        """
        X = self._validate(X, reset=True)
        model = _GaussianMixtureFamily(
            self.n_components, covariance_type=self.covariance_type, reg_covar=self.reg_covar
        )
        fit = pg.fit(
            model,
            X,
            method="em",
            seed=_seed(self.random_state),
            progress=self._progress(),
            max_iter=_check_int(self.max_iter, "max_iter"),
            tol=_check_number(self.tol, "tol"),
            n_init=_check_int(self.n_init, "n_init"),
            init=self._init(model),
        )
        self._set_fitted(fit, len(X))
        self.n_iter_ = int(fit.extras["n_iter"])
        self.lower_bound_ = float(fit.history[-1]) / len(X)
        return self

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better; scikit-learn's count of
        free parameters).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        float
        """
        check_is_fitted(self)
        return float(self.fit_.bic(self._validate(X, reset=False)))

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        float
        """
        check_is_fitted(self)
        return float(self.fit_.aic(self._validate(X, reset=False)))


_SVI_OPTIONS = ("num_steps", "lr", "guide")
_MCMC_OPTIONS = ("warmup_steps", "num_chains")


class BayesianGaussianMixture(_MixtureEstimator):
    """Gaussian mixture with priors on every parameter, fitted by SVI or MCMC.

    The family's Bayesian model (:class:`probgen.models.GaussianMixture`: a Dirichlet prior on
    the weights, normal priors on the means, log-normal scales and LKJ correlations, centred on
    the data), fitted by ``method``.  Predictions average over the posterior:
    :meth:`predict_proba` is the mean of ``p(z | x, theta)`` over draws, :meth:`score_samples`
    the log posterior-predictive density.  ``weights_`` and ``means_`` are posterior means,
    ``covariances_`` the posterior mean of the covariance matrices.  Options left at None keep
    the backend's defaults (``probgen.fit``'s docstring lists them).

    Parameters
    ----------
    n_components : int, default 1
        Number of components.
    covariance_type : {"full", "diag", "spherical", "tied"}, default "full"
    method : {"svi", "mcmc"}, default "svi"
        Stochastic variational inference or NUTS.
    weight_concentration : float, default 1.0
        Dirichlet concentration of the weights prior.
    loc_scale : float, default 2.0
        Prior standard deviation of the means, in data standard deviations.
    lkj_concentration : float, default 2.0
        LKJ concentration of the correlation prior.
    reg_covar : float, default 1e-6
        The family's covariance regulariser (used by its closed-form pieces).
    num_steps, lr, guide : optional
        SVI options (steps, learning rate, guide name).
    num_samples : int, optional
        Posterior draws (SVI: from the fitted guide; MCMC: per chain).
    warmup_steps, num_chains : int, optional
        MCMC options.
    random_state : int, RandomState or None, default None
    verbose : int, default 0

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : numpy.ndarray
    converged_ : bool
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str
    fit_ : probgen.Fit
        With ``fit_.posterior`` holding the draws.

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.sklearn import BayesianGaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-3, 1, (50, 2)), rng.normal(3, 1, (50, 2))])
    >>> bgm = BayesianGaussianMixture(2, covariance_type="diag", num_steps=500, num_samples=50,
    ...                               random_state=0).fit(X)
    >>> bgm.predict_proba(X[:2]).shape
    (2, 2)
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        method: str = "svi",
        weight_concentration: float = 1.0,
        loc_scale: float = 2.0,
        lkj_concentration: float = 2.0,
        reg_covar: float = 1e-6,
        num_steps: int | None = None,
        lr: float | None = None,
        guide: str | None = None,
        num_samples: int | None = None,
        warmup_steps: int | None = None,
        num_chains: int | None = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.method = method
        self.weight_concentration = weight_concentration
        self.loc_scale = loc_scale
        self.lkj_concentration = lkj_concentration
        self.reg_covar = reg_covar
        self.num_steps = num_steps
        self.lr = lr
        self.guide = guide
        self.num_samples = num_samples
        self.warmup_steps = warmup_steps
        self.num_chains = num_chains
        self.random_state = random_state
        self.verbose = verbose

    def _options(self) -> dict[str, Any]:
        if self.method not in ("svi", "mcmc"):
            raise ValueError(f"method must be 'svi' or 'mcmc'; got {self.method!r}.")
        wrong = _MCMC_OPTIONS if self.method == "svi" else _SVI_OPTIONS
        given = [name for name in wrong if getattr(self, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} do(es) not apply to method={self.method!r}; leave it None.")
        names = ("num_samples",) + (_SVI_OPTIONS if self.method == "svi" else _MCMC_OPTIONS)
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def fit(self, X: Any, y: Any = None) -> BayesianGaussianMixture:
        """Fit the Bayesian mixture to ``X`` by ``method``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        BayesianGaussianMixture
            This estimator, fitted.

        Raises
        ------
        ValueError
            Bad data, an unknown ``method``, or an option of the other method.
        """
        X = self._validate(X, reset=True)
        model = _GaussianMixtureFamily(
            self.n_components,
            covariance_type=self.covariance_type,
            reg_covar=self.reg_covar,
            weight_concentration=self.weight_concentration,
            loc_scale=self.loc_scale,
            lkj_concentration=self.lkj_concentration,
        )
        fit = pg.fit(
            model,
            X,
            method=self.method,
            seed=_seed(self.random_state),
            progress=self._progress(),
            **self._options(),
        )
        self._set_fitted(fit, len(X))
        return self


# ------------------------------------------------------------------------------ HMMs
def _split(X: np.ndarray, lengths: Any) -> list[np.ndarray]:
    """The sequences of ``X`` cut by ``lengths`` (hmmlearn's convention: None is one sequence)."""
    if lengths is None:
        return [X]
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.size == 0:
        raise ValueError(f"lengths must be a 1-D sequence of ints; got {lengths!r}.")
    if np.any(arr < 1):
        raise ValueError(f"lengths must be positive; got {arr.tolist()}.")
    if int(arr.sum()) != len(X):
        raise ValueError(
            f"lengths must sum to the number of rows of X ({len(X)}); they sum to {int(arr.sum())}."
        )
    return np.split(X, np.cumsum(arr)[:-1])


class _HMMEstimator(_Estimator, abc.ABC):
    """hmmlearn's methods over :class:`probgen.models.HiddenMarkovModel` fitted by Baum-Welch."""

    n_components: int
    n_iter: int
    tol: float
    n_init: int
    init_params: str
    startprob_init: Any
    transmat_init: Any
    random_state: Any

    @abc.abstractmethod
    def _validate(self, X: Any, *, reset: bool) -> np.ndarray:
        """Defined by each concrete estimator."""

    def _sequences(self, X: np.ndarray, lengths: Any) -> list[np.ndarray]:
        return _split(X, lengths)

    @abc.abstractmethod
    def _family(self, X: np.ndarray) -> _HiddenMarkovModel:
        """Defined by each concrete estimator."""

    @abc.abstractmethod
    def _emission_init(self) -> dict[str, Any]:
        """Defined by each concrete estimator."""

    def _init(self) -> Any:
        given = {"initial": self.startprob_init, "transition": self.transmat_init, **self._emission_init()}
        sites = {k: np.asarray(v, dtype=np.float64) for k, v in given.items() if v is not None}
        return sites or self.init_params

    @abc.abstractmethod
    def _set_emission(self, params: Mapping[str, torch.Tensor]) -> None:
        """Defined by each concrete estimator."""

    def fit(self, X: Any, lengths: Any = None) -> Any:
        """Fit by Baum-Welch (EM) to one sequence or to several concatenated ones.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Observations of every sequence, one after another (hmmlearn's layout).
        lengths : array-like of int, optional
            Length of each sequence (they sum to ``n_samples``); None: one sequence.

        Returns
        -------
        self
            This estimator, fitted.

        Raises
        ------
        ValueError
            Bad values in ``X``, ``lengths`` that do not cut ``X``, or parameters out of range.
        """
        X = self._validate(X, reset=True)
        seqs = self._sequences(X, lengths)
        model = self._family(X)
        fit = pg.fit(
            model,
            seqs if len(seqs) > 1 else seqs[0],
            method="em",
            seed=_seed(self.random_state),
            progress=self._progress(),
            max_iter=_check_int(self.n_iter, "n_iter"),
            tol=_check_number(self.tol, "tol"),
            n_init=_check_int(self.n_init, "n_init"),
            init=self._init(),
        )
        self.fit_ = fit
        p = fit.params
        self.startprob_ = _numpy(p["initial"])
        self.transmat_ = _numpy(p["transition"])
        self._set_emission(p)
        self.converged_ = bool(fit.converged)
        self.n_iter_ = int(fit.extras["n_iter"])
        self.history_ = np.array(fit.history, dtype=np.float64)
        return self

    def _prepared(self, X: Any, lengths: Any) -> Any:
        check_is_fitted(self)
        seqs = self._sequences(self._validate(X, reset=False), lengths)
        return self.fit_.model.prepare_data(seqs)

    def score(self, X: Any, lengths: Any = None) -> float:
        """Total log-likelihood of the sequences, hidden states summed out (hmmlearn's ``score``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        float
        """
        data = self._prepared(X, lengths)
        return float(self.fit_.log_prob(data).sum())

    def score_samples(self, X: Any, lengths: Any = None) -> tuple[float, np.ndarray]:
        """Total log-likelihood and the posterior state probabilities of every step (hmmlearn's).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        log_prob : float
        posteriors : numpy.ndarray of float64, shape (n_samples, n_components)
        """
        data = self._prepared(X, lengths)
        return float(self.fit_.log_prob(data).sum()), self._posteriors(data)

    def _posteriors(self, data: Any) -> np.ndarray:
        post = self.fit_.predict_proba(data)
        return _numpy(torch.cat(post) if isinstance(post, list) else post)

    def predict_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Posterior probability of every state at every step (forward-backward).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples, n_components)
        """
        return self._posteriors(self._prepared(X, lengths))

    def decode(self, X: Any, lengths: Any = None) -> tuple[float, np.ndarray]:
        """Most probable state path (Viterbi) and its joint log-probability, summed over sequences.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        log_prob : float
            ``log p(X, path)``.
        states : numpy.ndarray of int64, shape (n_samples,)
        """
        data = self._prepared(X, lengths)
        model = self.fit_.model
        assert isinstance(model, _HiddenMarkovModel)
        paths, scores = model.viterbi(data, self.fit_.params)
        return float(scores.sum()), _numpy(torch.cat(paths), np.int64)

    def predict(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Most probable state path of each sequence (Viterbi), concatenated.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        numpy.ndarray of int64, shape (n_samples,)
        """
        return self.decode(X, lengths)[1]

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion (hmmlearn's count of free parameters; lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        float
        """
        data = self._prepared(X, lengths)
        return float(self.fit_.bic(data))

    def aic(self, X: Any, lengths: Any = None) -> float:
        """Akaike information criterion (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        float
        """
        data = self._prepared(X, lengths)
        return float(self.fit_.aic(data))

    @abc.abstractmethod
    def _as_rows(self, x: torch.Tensor) -> np.ndarray:
        """Defined by each concrete estimator."""

    def sample(self, n_samples: int = 1, random_state: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw one sequence of ``n_samples`` steps from the fitted chain (hmmlearn's ``sample``).

        Parameters
        ----------
        n_samples : int, default 1
            Steps.
        random_state : int, RandomState or None, optional
            Seed of this draw (default: the estimator's ``random_state``).

        Returns
        -------
        X : numpy.ndarray of shape (n_samples, n_features)
        states : numpy.ndarray of int64, shape (n_samples,)
        """
        check_is_fitted(self)
        _check_int(n_samples, "n_samples")
        seed = _seed(self.random_state if random_state is None else random_state)
        x, latents = self.fit_.sample(1, length=int(n_samples), return_latents=True, seed=seed)
        return self._as_rows(x[0]), _numpy(latents["states"][0], np.int64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class GaussianHMM(_HMMEstimator):
    """Hidden Markov model with Gaussian emissions: hmmlearn's ``GaussianHMM`` over probgen's.

    Baum-Welch follows hmmlearn's updates (``min_covar`` on the starting covariance,
    ``covars_prior`` added to the covariance numerators), so from the same start the iterates
    agree; it stops when the log-likelihood gains less than ``tol`` nats **per time step**
    (hmmlearn's ``tol`` is on the total), after at most ``n_iter`` iterations.  ``score`` and
    ``score_samples`` keep hmmlearn's meaning (the total log-likelihood; with the posteriors).

    Parameters
    ----------
    n_components : int, default 1
        Hidden states.
    covariance_type : {"diag", "full", "spherical", "tied"}, default "diag"
    min_covar : float, default 1e-3
    covars_prior : float, default 1e-2
    n_iter : int, default 1000
        Baum-Welch iterations at most.
    tol : float, default 1e-8
        Convergence threshold on the log-likelihood gain per time step.
    n_init : int, default 1
        Starts; the best is kept.
    init_params : {"kmeans", "random"}, default "kmeans"
        Starting strategy when no ``*_init`` is given.
    startprob_init : array-like of shape (n_components,), optional
    transmat_init : array-like of shape (n_components, n_components), optional
    means_init : array-like of shape (n_components, n_features), optional
    covars_init : array-like, optional
        In hmmlearn's layout for ``covariance_type``: ``(K, d, d)`` full, ``(K, d)`` diag,
        ``(K,)`` spherical, ``(d, d)`` tied.
    random_state : int, RandomState or None, default None
    verbose : int, default 0

    Attributes
    ----------
    startprob_ : numpy.ndarray of shape (n_components,)
    transmat_ : numpy.ndarray of shape (n_components, n_components)
    means_ : numpy.ndarray of shape (n_components, n_features)
    covars_ : numpy.ndarray of shape (n_components, n_features, n_features)
        Full covariance matrices whatever the ``covariance_type`` (as hmmlearn's ``covars_``).
    converged_ : bool
    n_iter_ : int
    history_ : numpy.ndarray
        Log-likelihood at every iteration.
    n_features_in_ : int
    fit_ : probgen.Fit

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.sklearn import GaussianHMM
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-3, 1, (60, 1)), rng.normal(3, 1, (60, 1))])
    >>> hmm = GaussianHMM(2, random_state=0).fit(X)
    >>> int(hmm.predict(X)[0] != hmm.predict(X)[-1])
    1
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        covars_prior: float = 1e-2,
        n_iter: int = 1000,
        tol: float = 1e-8,
        n_init: int = 1,
        init_params: str = "kmeans",
        startprob_init: Any = None,
        transmat_init: Any = None,
        means_init: Any = None,
        covars_init: Any = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.covars_prior = covars_prior
        self.n_iter = n_iter
        self.tol = tol
        self.n_init = n_init
        self.init_params = init_params
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.means_init = means_init
        self.covars_init = covars_init
        self.random_state = random_state
        self.verbose = verbose

    def _validate(self, X: Any, *, reset: bool) -> np.ndarray:
        return np.array(validate_data(self, X, dtype=_FLOATS, reset=reset), dtype=np.float64)

    def _family(self, X: np.ndarray) -> _HiddenMarkovModel:
        return _HiddenMarkovModel(
            self.n_components,
            "gaussian",
            self.covariance_type,
            min_covar=self.min_covar,
            covars_prior=self.covars_prior,
        )

    def _emission_init(self) -> dict[str, Any]:
        return {"locs": self.means_init, "covars": self.covars_init}

    def _set_emission(self, params: Mapping[str, torch.Tensor]) -> None:
        self.means_ = _numpy(params["locs"])
        self.covars_ = _numpy(self.fit_.model.covariances(params))  # type: ignore[attr-defined]

    def _as_rows(self, x: torch.Tensor) -> np.ndarray:
        return _numpy(x).reshape(len(x), -1)


class CategoricalHMM(_HMMEstimator):
    """Hidden Markov model over symbols: hmmlearn's ``CategoricalHMM`` over probgen's family.

    ``X`` is one column of symbols ``0 .. n_features - 1`` (integers, in any numeric dtype).
    Baum-Welch follows hmmlearn's updates; ``tol`` is per time step, as for :class:`GaussianHMM`.

    Parameters
    ----------
    n_components : int, default 1
        Hidden states.
    n_features : int, optional
        Number of symbols (default: the largest symbol seen plus one).
    n_iter : int, default 1000
    tol : float, default 1e-8
    n_init : int, default 1
    init_params : {"kmeans", "random"}, default "kmeans"
        Starting strategy (emission probabilities start as random rows either way).
    startprob_init, transmat_init : array-like, optional
    emissionprob_init : array-like of shape (n_components, n_features), optional
    random_state : int, RandomState or None, default None
    verbose : int, default 0

    Attributes
    ----------
    startprob_, transmat_ : numpy.ndarray
    emissionprob_ : numpy.ndarray of shape (n_components, n_features)
    converged_ : bool
    n_iter_ : int
    history_ : numpy.ndarray
    n_features_in_ : int
        Always 1 (one column of symbols).
    fit_ : probgen.Fit

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.sklearn import CategoricalHMM
    >>> X = np.array([[0], [0], [1], [0], [2], [2], [1], [2]] * 10)
    >>> CategoricalHMM(2, random_state=0).fit(X).emissionprob_.shape
    (2, 3)
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        n_features: int | None = None,
        n_iter: int = 1000,
        tol: float = 1e-8,
        n_init: int = 1,
        init_params: str = "kmeans",
        startprob_init: Any = None,
        transmat_init: Any = None,
        emissionprob_init: Any = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.n_components = n_components
        self.n_features = n_features
        self.n_iter = n_iter
        self.tol = tol
        self.n_init = n_init
        self.init_params = init_params
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.emissionprob_init = emissionprob_init
        self.random_state = random_state
        self.verbose = verbose

    def _validate(self, X: Any, *, reset: bool) -> np.ndarray:
        X = validate_data(self, X, dtype="numeric", reset=reset)
        if X.shape[1] != 1:
            raise ValueError(f"X must be one column of symbols (n_samples, 1); got {X.shape[1]} columns.")
        codes = _check_codes(X)
        if not reset and codes.size and int(codes.max()) >= self.emissionprob_.shape[1]:
            raise ValueError(
                f"X holds symbol {int(codes.max())}; the model knows symbols 0..{self.emissionprob_.shape[1] - 1}."
            )
        return codes

    def _sequences(self, X: np.ndarray, lengths: Any) -> list[np.ndarray]:
        return [s[:, 0] for s in _split(X, lengths)]

    def _family(self, X: np.ndarray) -> _HiddenMarkovModel:
        if self.n_features is None:
            n_symbols = int(X.max()) + 1
        else:
            n_symbols = _check_int(self.n_features, "n_features")
        return _HiddenMarkovModel(self.n_components, "categorical", n_symbols=n_symbols)

    def _emission_init(self) -> dict[str, Any]:
        return {"probs": self.emissionprob_init}

    def _set_emission(self, params: Mapping[str, torch.Tensor]) -> None:
        self.emissionprob_ = _numpy(params["probs"])

    def _as_rows(self, x: torch.Tensor) -> np.ndarray:
        return _numpy(x, np.int64).reshape(-1, 1)


# ------------------------------------------------------------------------------ naive Bayes
class NaiveBayes(ClassifierMixin, _Estimator):
    """Categorical naive Bayes classifier: scikit-learn's ``CategoricalNB`` over probgen's.

    ``X`` holds category codes ``0, 1, ...`` per feature (whole numbers in any numeric dtype;
    other values are refused, never truncated); ``y`` any class labels.  The family
    (:class:`probgen.models.NaiveBayes`) smooths every conditional table with ``alpha`` as
    ``CategoricalNB`` does, and the class prior too: ``(n_c + alpha) / (n + K alpha)``.

    Parameters
    ----------
    alpha : float, default 1.0
        Additive (Laplace) smoothing; 0 gives maximum likelihood.
    min_categories : int or array-like of int, optional
        Categories per feature at least (default: the largest code seen plus one); codes
        beyond them are refused at prediction.

    Attributes
    ----------
    classes_ : numpy.ndarray
        Class labels, sorted.
    n_categories_ : numpy.ndarray of int64, shape (n_features,)
    class_log_prior_ : numpy.ndarray of shape (n_classes,)
    feature_log_prob_ : list of numpy.ndarray
        ``log P(x_j = c | class)`` as ``(n_classes, n_categories_[j])`` per feature.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of str
    fit_ : probgen.Fit

    Examples
    --------
    >>> import numpy as np
    >>> from probgen.sklearn import NaiveBayes
    >>> X = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])
    >>> NaiveBayes().fit(X, ["a", "a", "b", "b"]).predict([[0, 1], [1, 0]]).tolist()
    ['a', 'b']
    """

    def __init__(self, alpha: float = 1.0, *, min_categories: Any = None) -> None:
        self.alpha = alpha
        self.min_categories = min_categories

    def _codes(self, X: Any, *, reset: bool) -> np.ndarray:
        X = _check_codes(validate_data(self, X, dtype="numeric", reset=reset))
        if not reset:
            beyond = X >= self.n_categories_[None, :]
            if beyond.any():
                j = int(np.nonzero(beyond.any(0))[0][0])
                raise ValueError(
                    f"X column {j} holds code {int(X[:, j].max())}; the classifier knows codes "
                    f"0..{int(self.n_categories_[j]) - 1} for it (set min_categories to allow more)."
                )
        return X

    def _n_categories(self, X: np.ndarray) -> np.ndarray:
        seen = X.max(0) + 1
        if self.min_categories is None:
            return seen.astype(np.int64)
        given = np.asarray(self.min_categories)
        if given.dtype.kind not in "iu" or given.ndim > 1 or (given.ndim == 1 and len(given) != X.shape[1]):
            raise ValueError(
                f"min_categories must be an int or {X.shape[1]} ints (one per feature); got {self.min_categories!r}."
            )
        return np.maximum(seen, given).astype(np.int64)

    def fit(self, X: Any, y: Any) -> NaiveBayes:
        """Fit the class prior and the per-class category tables.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Category codes.
        y : array-like of shape (n_samples,)
            Class labels (at least two classes).

        Returns
        -------
        NaiveBayes
            This estimator, fitted.

        Raises
        ------
        ValueError
            Codes that are not non-negative whole numbers, a continuous ``y``, one class only.
        """
        X, y = validate_data(self, X, y, dtype="numeric")
        X = _check_codes(X)
        check_classification_targets(y)
        self.classes_, y_codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has 1 class ({self.classes_[0]!r}); a classifier needs at least 2 classes.")
        _check_number(self.alpha, "alpha")
        self.n_categories_ = self._n_categories(X)
        names = [f"x{j}" for j in range(X.shape[1])]
        states = {n: list(range(int(c))) for n, c in zip(names, self.n_categories_, strict=True)}
        model = _NaiveBayesFamily(len(self.classes_), alpha=float(self.alpha), states=states)
        data = np.column_stack([y_codes, X]).astype(np.float64)
        fit = pg.fit(model, data, method="em", progress=False)
        self.fit_ = fit
        self.class_log_prior_ = np.log(_numpy(fit.params["cpd_class"]).reshape(-1))
        self.feature_log_prob_ = [np.log(_numpy(fit.params[f"cpd_{n}"])) for n in names]
        return self

    def _rows(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = self._codes(X, reset=False)
        return np.column_stack([np.full(len(X), np.nan), X.astype(np.float64)])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior class probabilities ``P(class | x)`` (Bayes' rule).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        rows = self._rows(X)
        return _numpy(self.fit_.predict_proba(rows))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[proba.argmax(1)])

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-probability ``log p(x)`` of each row's features, the class summed out.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        numpy.ndarray of float64, shape (n_samples,)
        """
        rows = self._rows(X)
        return _numpy(self.fit_.log_prob(rows))

    def sample(self, n_samples: int = 1, random_state: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw rows and their classes from the fitted joint distribution.

        Parameters
        ----------
        n_samples : int, default 1
        random_state : int, RandomState or None, optional

        Returns
        -------
        X : numpy.ndarray of int64, shape (n_samples, n_features)
        y : numpy.ndarray, shape (n_samples,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        _check_int(n_samples, "n_samples")
        draws = _numpy(self.fit_.sample(int(n_samples), seed=_seed(random_state)), np.int64)
        return draws[:, 1:], np.asarray(self.classes_[draws[:, 0]])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.categorical = True
        return tags


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
