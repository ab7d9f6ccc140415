"""Naive Bayes for scikit-learn: ``NaiveBayes``, a classifier over category codes."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import (
    ClassifierMixin,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

import probgen as pg
from probgen.models import NaiveBayes as _NaiveBayesFamily
from probgen.sklearn._base import (
    _check_codes,
    _check_int,
    _check_number,
    _Estimator,
    _numpy,
    _seed,
)


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
