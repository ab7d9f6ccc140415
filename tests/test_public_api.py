"""The public names DESIGN.md promises exist, and every __all__ is sorted."""

from __future__ import annotations

import importlib

import pytest

import probgen as pg

FIT_NAMES = [
    "params",
    "posterior",
    "history",
    "converged",
    "to_arviz",
    "log_prob",
    "sample",
    "predict",
    "predict_proba",
    "marginals",
    "bic",
    "aic",
    "save",
]


def test_top_level_names():
    for name in ("fit", "Fit", "GenerativeModel", "model", "summary", "check", "compare", "load"):
        assert hasattr(pg, name), name


def test_fit_names():
    for name in FIT_NAMES:
        assert hasattr(pg.Fit, name) or name in pg.Fit.__dataclass_fields__, name


def test_contract_suite_is_public():
    from probgen.testing import check_model

    assert callable(check_model)


def test_families_are_registered_for_load():
    from probgen.model import registered_model
    from probgen.models import GaussianMixture, HiddenMarkovModel

    assert registered_model("GaussianMixture") is GaussianMixture
    assert registered_model("HiddenMarkovModel") is HiddenMarkovModel


@pytest.mark.parametrize("module", ["probgen", "probgen.models", "probgen.inference", "probgen.testing"])
def test_all_is_sorted_and_importable(module):
    mod = importlib.import_module(module)
    assert list(mod.__all__) == sorted(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_backends_are_registered():
    assert pg.available_methods() == ["adversarial", "cd", "em", "enum", "mcmc", "svi"]


def test_cli_help_and_datasets(capsys):
    from probgen.cli import main

    assert main([]) == 0
    assert "probgen" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "old_faithful" in out and " 272 rows" in out and " 344 rows" in out


PINNED = {
    "probgen.models": [
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
    ],
    "probgen.inference": ["Adversarial", "CD", "EM", "Enumeration", "MCMC", "SVI"],
}


@pytest.mark.parametrize("module", sorted(PINNED))
def test_package_public_names_are_pinned(module):
    assert sorted(importlib.import_module(module).__all__) == sorted(PINNED[module])


def test_every_family_fit_class_is_a_fit():
    import probgen.models as families

    for name in families.__all__:
        cls = getattr(families, name)
        if isinstance(cls, type) and issubclass(cls, pg.GenerativeModel) and cls.fit_class is not None:
            assert issubclass(cls.fit_class, pg.Fit), name
