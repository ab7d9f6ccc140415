"""Inference backends, installed as ``probgen.inference``; each registers itself by name."""

from probgen.inference.adversarial import Adversarial
from probgen.inference.cd import CD
from probgen.inference.em import EM
from probgen.inference.enumeration import Enumeration
from probgen.inference.mcmc import MCMC
from probgen.inference.svi import SVI

__all__ = ["Adversarial", "CD", "EM", "Enumeration", "MCMC", "SVI"]  # noqa: RUF022  (plain sorted order)
