"""Model families: installed as ``probgen.models``."""

from probgen.models.discrete_mixture import BernoulliMixture, CategoricalMixture, PoissonMixture
from probgen.models.gaussian_mixture import GaussianMixture
from probgen.models.hmm import HiddenMarkovModel, SequenceData
from probgen.models.vae import VAE, SemiSupervisedVAE

__all__ = [
    "BernoulliMixture",
    "CategoricalMixture",
    "GaussianMixture",
    "HiddenMarkovModel",
    "PoissonMixture",
    "SemiSupervisedVAE",
    "SequenceData",
    "VAE",
]
