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

from probgen.sklearn import _base  # noqa: F401, I001  (first: a clear ImportError without scikit-learn)
from probgen.sklearn._hmm import CategoricalHMM, GaussianHMM
from probgen.sklearn._mixture import BayesianGaussianMixture, GaussianMixture
from probgen.sklearn._naive_bayes import NaiveBayes
from probgen.sklearn._rbm import RBM

__all__ = ["BayesianGaussianMixture", "CategoricalHMM", "GaussianHMM", "GaussianMixture", "NaiveBayes", "RBM"]

for _cls in (BayesianGaussianMixture, CategoricalHMM, GaussianHMM, GaussianMixture, NaiveBayes, RBM):
    _cls.__module__ = __name__  # the public path: what pickles and skops files name
del _cls
