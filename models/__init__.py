"""Model families: installed as ``probgen.models``."""

from probgen.models.mixture import BernoulliMixture, CategoricalMixture, GaussianMixture, PoissonMixture

__all__ = [
    "BernoulliMixture",
    "CategoricalMixture",
    "GaussianMixture",
    "PoissonMixture",
]
