"""pg.load checks what it reads: the model given against the one saved, the arrays against the
model, the metadata's structure; damaged and crafted files get a clear ValueError."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import probgen as pg
from probgen.models import GaussianMixture, PoissonMixture


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    x = pg.datasets.load_old_faithful()
    fit = pg.fit(GaussianMixture(2, covariance_type="full"), x, method="em", seed=0, progress=False)
    path = tmp_path_factory.mktemp("load") / "full.npz"
    fit.save(path)
    return fit, path, x


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as npz:
        files = {k: npz[k] for k in npz.files}
    meta = json.loads(files["__meta__"].tobytes().decode())
    change(files, meta)
    files["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **files)
    return dst


def test_another_configuration_of_the_same_family_is_refused_naming_both(saved):
    _, path, _ = saved
    with pytest.raises(ValueError, match="covariance_type: saved 'full', given 'diag'"):
        pg.load(path, model=GaussianMixture(2, covariance_type="diag"))


def test_another_family_is_refused(saved):
    _, path, _ = saved
    with pytest.raises(
        ValueError, match="holds a fit of a GaussianMixture; the model given is a PoissonMixture"
    ):
        pg.load(path, model=PoissonMixture(2))


def test_the_same_configuration_loads_and_scores_the_same(saved):
    fit, path, x = saved
    back = pg.load(path, model=GaussianMixture(2, covariance_type="full"))
    np.testing.assert_array_equal(back.log_prob(x).numpy(), fit.log_prob(x).numpy())


def test_nan_parameters_are_refused(saved, tmp_path):
    _, path, _ = saved

    def poison(files, meta):
        files["params/locs"] = files["params/locs"].copy()
        files["params/locs"][0, 0] = np.nan

    with pytest.raises(ValueError, match="'locs' holds NaN"):
        pg.load(_rewrite(path, tmp_path / "nan.npz", poison))


def test_an_array_of_the_wrong_shape_is_refused(saved, tmp_path):
    _, path, _ = saved

    def reshape(files, meta):
        files["params/locs"] = np.zeros((3, 5))

    with pytest.raises(ValueError, match="do not fit"):
        pg.load(_rewrite(path, tmp_path / "shape.npz", reshape))


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda m: m.pop("params"), "lacks 'params'"),
        (lambda m: m.update(model="GaussianMixture"), "not a record with a class name"),
        (lambda m: m.update(seed="zero"), "'seed' is not an integer"),
        (lambda m: m.update(params=[1, 2]), "not a list of array names"),
        (lambda m: m.update(format="probgen-fit/7"), "newer probgen"),
    ],
)
def test_damaged_metadata_is_named(saved, tmp_path, damage, phrase):
    _, path, _ = saved
    with pytest.raises(ValueError, match=phrase):
        pg.load(_rewrite(path, tmp_path / "meta.npz", lambda files, meta: damage(meta)))


def test_a_configuration_asking_for_sizes_the_file_lacks_is_refused_before_building(saved, tmp_path):
    _, path, _ = saved

    def grow(files, meta):
        meta["model"]["config"]["n_components"] = 200_000

    with pytest.raises(ValueError, match="n_components=200000, a size no array in the file has"):
        pg.load(_rewrite(path, tmp_path / "big.npz", grow))


def test_a_member_that_is_not_an_array_is_refused(saved, tmp_path):
    _, path, _ = saved
    crafted = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(crafted, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("payload.pkl", b"\x80\x04\x95not an array")
    with pytest.raises(ValueError, match=r"members \['payload.pkl'\] are not arrays"):
        pg.load(crafted)


def test_a_junk_file_gets_no_advice_to_allow_pickles(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x80\x04\x95" + b"x" * 100)
    with pytest.raises(ValueError, match="not a readable probgen fit") as err:
        pg.load(junk)
    assert "allow_pickle" not in str(err.value)


def test_a_text_file_is_called_what_it_is_not_a_pickle(tmp_path):
    junk = tmp_path / "notes.npz"
    junk.write_bytes(b"hello, these are notes, not a fit")
    with pytest.raises(ValueError, match="neither a zip archive nor a .npy array") as err:
        pg.load(junk)
    assert "pickle" not in str(err.value)
