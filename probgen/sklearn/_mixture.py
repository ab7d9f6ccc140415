"""Gaussian mixtures for scikit-learn: ``GaussianMixture`` (EM) and ``BayesianGaussianMixture`` (SVI or MCMC)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
from sklearn.base import (
    DensityMixin,
)
from sklearn.utils.validation import check_is_fitted, validate_data

import probgen as pg
from probgen.models.gaussian_mixture import GaussianMixture as _GaussianMixtureFamily
from probgen.sklearn._base import (
    _FLOATS,
    _check_int,
    _check_number,
    _Estimator,
    _numpy,
    _seed,
)


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
