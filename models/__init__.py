"""Model families: installed as ``probgen.models``."""

from probgen.models.hmm import HiddenMarkovModel, SequenceData
from probgen.models.mixture import BernoulliMixture, CategoricalMixture, GaussianMixture, PoissonMixture

__all__ = [
    "BernoulliMixture",
    "CategoricalMixture",
    "GaussianMixture",
    "HiddenMarkovModel",
    "PoissonMixture",
    "SequenceData",
]
