"""Model families: installed as ``probgen.models``."""

from probgen.models.bayesnet import BayesianNetwork
from probgen.models.char_rnn import CharRNN
from probgen.models.discrete_mixture import BernoulliMixture, CategoricalMixture, PoissonMixture
from probgen.models.gan import GAN
from probgen.models.gaussian_mixture import GaussianMixture
from probgen.models.hmm import HiddenMarkovModel, SequenceData
from probgen.models.naive_bayes import NaiveBayes
from probgen.models.rbm import RBM, LogPartition
from probgen.models.vae import VAE, ConditionalVAE, SemiSupervisedVAE

__all__ = [
    "BayesianNetwork",
    "BernoulliMixture",
    "CategoricalMixture",
    "CharRNN",
    "ConditionalVAE",
    "GAN",
    "GaussianMixture",
    "HiddenMarkovModel",
    "LogPartition",
    "NaiveBayes",
    "PoissonMixture",
    "RBM",
    "SemiSupervisedVAE",
    "SequenceData",
    "VAE",
]
