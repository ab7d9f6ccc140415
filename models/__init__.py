"""Model families: installed as ``probgen.models``."""

from probgen.models.bayesnet import BayesianNetwork
from probgen.models.discrete_mixture import BernoulliMixture, CategoricalMixture, PoissonMixture
from probgen.models.gaussian_mixture import GaussianMixture
from probgen.models.hmm import HiddenMarkovModel, SequenceData
from probgen.models.naive_bayes import NaiveBayes
from probgen.models.vae import VAE, ConditionalVAE, SemiSupervisedVAE

__all__ = [
    "BayesianNetwork",
    "BernoulliMixture",
    "CategoricalMixture",
    "ConditionalVAE",
    "GaussianMixture",
    "HiddenMarkovModel",
    "NaiveBayes",
    "PoissonMixture",
    "SemiSupervisedVAE",
    "SequenceData",
    "VAE",
]
