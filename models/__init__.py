"""Model families: installed as ``probgen.models``."""

from probgen.models._vae_base import LabelledVAEFit, VAEFit
from probgen.models.bayesnet import BayesianNetwork, NetworkFit
from probgen.models.bif import read_bif, write_bif
from probgen.models.char_rnn import CharRNN, CharRNNFit
from probgen.models.char_transformer import CharTransformer, CharTransformerFit
from probgen.models.discrete_mixture import BernoulliMixture, CategoricalMixture, PoissonMixture
from probgen.models.gan import GAN, GANFit
from probgen.models.gaussian_mixture import GaussianMixture
from probgen.models.hmm import HiddenMarkovModel, SequenceData
from probgen.models.naive_bayes import NaiveBayes
from probgen.models.rbm import RBM, LogPartition, RBMFit
from probgen.models.structure import learn_structure, structure_score
from probgen.models.vae import VAE, ConditionalVAE, SemiSupervisedVAE, UnlabelledVAEFit

__all__ = [
    "BayesianNetwork",
    "BernoulliMixture",
    "CategoricalMixture",
    "CharRNN",
    "CharRNNFit",
    "CharTransformer",
    "CharTransformerFit",
    "ConditionalVAE",
    "GAN",
    "GANFit",
    "GaussianMixture",
    "HiddenMarkovModel",
    "LabelledVAEFit",
    "LogPartition",
    "NaiveBayes",
    "NetworkFit",
    "PoissonMixture",
    "RBM",
    "RBMFit",
    "SemiSupervisedVAE",
    "SequenceData",
    "UnlabelledVAEFit",
    "VAE",
    "VAEFit",
    "learn_structure",
    "read_bif",
    "structure_score",
    "write_bif",
]
