"""Hidden Markov models for scikit-learn, with hmmlearn's names: ``GaussianHMM`` and ``CategoricalHMM``."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data

import probgen as pg
from probgen.models import HiddenMarkovModel as _HiddenMarkovModel
from probgen.sklearn._base import (
    _FLOATS,
    _check_codes,
    _check_int,
    _check_number,
    _Estimator,
    _numpy,
    _seed,
)


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
