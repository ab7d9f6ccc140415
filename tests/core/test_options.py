"""Backend options are declared once: validation, aliases, suggestions and every table come from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import probgen as pg
from probgen.backend import BackendBase, options_table
from probgen.validation import positive_int
from tests.core.models import make_mixture

README = Path(__file__).resolve().parents[2] / "README.md"
X = torch.cat([torch.randn(40, dtype=torch.float64) - 3, torch.randn(40, dtype=torch.float64) + 3])


def test_the_readme_table_is_the_declared_options():
    text = README.read_text()
    block = re.search(r"<!-- options:.*?-->\n(.*?)<!-- /options -->", text, flags=re.S)
    assert block is not None, "README has no generated options table"
    assert block.group(1).strip() == options_table(markdown=True)


def test_help_and_each_backend_docstring_list_every_option():
    for name in pg.available_methods():
        backend = pg.get_backend(name)
        assert isinstance(backend, BackendBase)
        for option in backend.options:
            assert f"``{option.name}``" in (pg.fit.__doc__ or ""), (name, option.name)
            # numpydoc's "Other Parameters" of the backend class: "name : default value"
            entry = f"    {option.name} : default {option.default!r}\n        {option.help}"
            assert entry in (type(backend).__doc__ or ""), (name, option.name)


def test_a_misspelt_option_is_refused_with_the_valid_names_and_the_closest():
    with pytest.raises(ValueError, match=r"Unknown EM option\(s\) \['max_iters'\].*did you mean 'max_iter'"):
        pg.fit(make_mixture(), X, method="em", progress=False, max_iters=5)


@pytest.mark.filterwarnings("ignore::probgen.ConvergenceWarning")
def test_aliases_of_other_ecosystems_map_to_one_name():
    a = pg.fit(make_mixture(), X, method="em", progress=False, seed=0, n_iter=3, tol=0.0)
    b = pg.fit(make_mixture(), X, method="em", progress=False, seed=0, max_iter=3, tol=0.0)
    assert len(a.history) == len(b.history) == 3
    torch.testing.assert_close(a.params["locs"], b.params["locs"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="given twice"):
        pg.fit(make_mixture(), X, method="em", progress=False, n_iter=3, max_iter=3)


def test_declared_kinds_are_checked_before_any_work():
    with pytest.raises(TypeError, match="online must be a bool"):
        pg.fit(make_mixture(), X, method="em", progress=False, online="yes")
    with pytest.raises(ValueError, match="elbo='nope' is not known; expected None or one of"):
        pg.fit(make_mixture(), X, method="svi", progress=False, elbo="nope")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_one_positive_int_validator(bad):
    with pytest.raises(ValueError, match=r"n must be a positive int; got"):
        positive_int(bad, "n")
    assert positive_int(3, "n") == 3 and positive_int(None, "n", allow_none=True) is None
