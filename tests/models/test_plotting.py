"""Pictures of fits (``fit.plot`` -> ``model.plot_fit``): the artists carry what was fitted.

Drawn with matplotlib's Agg backend; every test closes its figures.
"""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import (  # noqa: E402
    BernoulliMixture,
    CategoricalMixture,
    GaussianMixture,
    HiddenMarkovModel,
    PoissonMixture,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def faithful() -> np.ndarray:
    return pg.datasets.load_old_faithful()[["eruptions", "waiting"]].to_numpy()


@pytest.fixture(scope="module")
def waiting() -> np.ndarray:
    return pg.datasets.load_geyser()["waiting"].to_numpy()


def _same_partition(colors: np.ndarray, labels: np.ndarray) -> None:
    """Items share a colour exactly when they share a label (colours follow the labels)."""
    _, by_color = np.unique(np.round(colors, 6), axis=0, return_inverse=True)
    pairs = np.unique(np.c_[by_color.ravel(), labels], axis=0)
    assert len(pairs) == len(np.unique(by_color)) == len(np.unique(labels))


# ------------------------------------------------------------------------ Gaussian mixture
def _full_covariances(fit) -> np.ndarray:
    """``(K, d, d)`` from scikit-learn's shapes of ``GaussianMixture.covariances``."""
    cov = fit.model.covariances(fit.params).numpy()
    k, d = fit.params["locs"].shape
    kind = fit.model.covariance_type
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    if kind == "spherical":
        return cov[:, None, None] * np.eye(d)
    if kind == "tied":
        return np.broadcast_to(cov, (k, d, d))
    return cov


@pytest.mark.parametrize("cov", ["full", "diag", "spherical", "tied"])
def test_gaussian_mixture_scatter_and_one_and_two_sd_ellipses(cov, faithful):
    k = 3
    fit = pg.fit(GaussianMixture(k, covariance_type=cov), faithful, method="em", seed=0, progress=False)
    ax = fit.plot()
    ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 2 * k
    scatter = next(c for c in ax.collections if isinstance(c, PathCollection))
    assert scatter.get_offsets().shape == (len(faithful), 2)
    _same_partition(scatter.get_facecolors()[:, :3], fit.predict(faithful).numpy())
    # centred on the means, semi-axes n_sd times the square roots of the covariance's eigenvalues
    locs = fit.params["locs"].numpy()
    covs = _full_covariances(fit)
    centres = np.array([e.center for e in ellipses])
    for c in range(k):
        mine = [e for e in ellipses if np.allclose(e.center, locs[c])]
        assert len(mine) == 2
        semi = sorted((e.width / 2 * e.height / 2, e) for e in mine)
        det = np.sqrt(np.linalg.det(covs[c]))
        assert semi[0][0] == pytest.approx(det, rel=1e-9)  # 1 sd: product of the semi-axes
        assert semi[1][0] == pytest.approx(4 * det, rel=1e-9)  # 2 sd
    assert len(np.unique(np.round(centres, 9), axis=0)) == k


def test_gaussian_mixture_ellipses_are_oriented_along_the_covariance(faithful):
    fit = pg.fit(GaussianMixture(2), faithful, method="em", seed=0, progress=False)
    ax = fit.plot(features=(1, 0))  # swapped: waiting on the horizontal axis
    covs = _full_covariances(fit)[:, ::-1, ::-1]
    locs = fit.params["locs"].numpy()[:, ::-1]
    for e in ax.patches:
        c = int(np.argmin(((locs - np.asarray(e.center)) ** 2).sum(1)))
        vals, vecs = np.linalg.eigh(covs[c])
        a = np.radians(e.angle)
        major = np.array([np.cos(a), np.sin(a)])
        assert abs(major @ vecs[:, 1]) == pytest.approx(1.0, abs=1e-9)  # along the larger axis
        assert e.width / e.height == pytest.approx(np.sqrt(vals[1] / vals[0]), rel=1e-9)


def test_one_feature_gaussian_mixture_draws_a_histogram_and_the_density(faithful):
    x = faithful[:, 1:]
    fit = pg.fit(GaussianMixture(2), x, method="em", seed=0, progress=False)
    fig, ax = plt.subplots()
    assert fit.plot(ax=ax) is ax
    assert len(ax.patches) > 5  # histogram bars
    lines = ax.get_lines()
    assert len(lines) == 2 + 1  # one weighted density per component, then the mixture
    grid, dens = lines[-1].get_data()
    np.testing.assert_allclose(dens, fit.log_prob(grid[:, None]).exp().numpy(), rtol=1e-10)
    np.testing.assert_allclose(lines[0].get_ydata() + lines[1].get_ydata(), dens, rtol=1e-10)


def test_gaussian_mixture_picture_options_are_checked(faithful):
    fit = pg.fit(GaussianMixture(2), faithful, method="em", seed=0, progress=False)
    with pytest.raises(ValueError, match=r"features=5 is out of range; the data have 2 features"):
        fit.plot(features=(0, 5))
    with pytest.raises(ValueError, match=r"features must name two different columns"):
        fit.plot(features=(1, 1))
    with pytest.raises(TypeError, match=r"features must be a pair of column indices"):
        fit.plot(features=0)
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['sequence'\]"):
        fit.plot(sequence=0)
    with pytest.raises(TypeError, match=r"ax must be matplotlib Axes or None; got str"):
        fit.plot(ax="left")


# ----------------------------------------------------------------------- discrete mixtures
def _image(ax) -> np.ndarray:
    (img,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    return np.asarray(img.get_array())


def test_bernoulli_and_categorical_heat_maps_show_the_component_probabilities():
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(120, 7)) < rng.uniform(0.1, 0.9, 7)).astype(float)
    fit = pg.fit(BernoulliMixture(2), x, method="em", seed=0, progress=False)
    ax = fit.plot()
    np.testing.assert_array_equal(_image(ax), fit.params["probs"].numpy())
    assert [t.get_text() for t in ax.get_yticklabels()][0].startswith("0 (")
    codes = rng.integers(0, 4, (150, 5))
    fit = pg.fit(CategoricalMixture(3), codes, method="em", seed=0, progress=False)
    ax = fit.plot()
    np.testing.assert_array_equal(_image(ax), fit.params["probs"].reshape(3, -1).numpy())


def test_poisson_mixture_of_several_counts_shows_its_rates():
    rng = np.random.default_rng(1)
    x = rng.poisson([[2.0, 9.0, 1.0]], (200, 3))
    fit = pg.fit(PoissonMixture(2), x, method="em", seed=0, progress=False)
    np.testing.assert_array_equal(_image(fit.plot()), fit.params["rates"].numpy())


def test_poisson_mixture_of_one_count_shows_frequencies_and_probabilities():
    visits = pg.datasets.load_doctor_visits()[["mdvis"]]
    fit = pg.fit(PoissonMixture(3), visits, method="em", seed=0, progress=False)
    ax = fit.plot()
    counts = visits["mdvis"].to_numpy()
    bars = ax.patches
    assert len(bars) == counts.max() + 1
    heights = np.array([b.get_height() for b in bars])
    np.testing.assert_allclose(heights, np.bincount(counts) / len(counts))
    support, prob = ax.get_lines()[-1].get_data()
    np.testing.assert_allclose(prob, fit.log_prob(support[:, None]).exp().numpy(), rtol=1e-10)


# ---------------------------------------------------------------------------------- HMM
def _strip_colors(ax, length: int) -> np.ndarray:
    """Per-step colour of the strips: each rectangle covers the steps of one run."""
    (strips,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    colors = strips.get_facecolors()[:, :3]
    per_step = np.empty((length, 3))
    covered = np.zeros(length, dtype=int)
    for path, color in zip(strips.get_paths(), colors, strict=True):
        x = path.vertices[:, 0]
        steps = np.arange(int(np.ceil(x.min())), int(np.floor(x.max())) + 1)
        per_step[steps] = color
        covered[steps] += 1
    assert np.all(covered == 1)  # the runs tile the series
    return per_step


@pytest.mark.parametrize("n_states", [2, 3])
def test_hmm_strips_follow_the_viterbi_path(n_states, waiting):
    fit = pg.fit(HiddenMarkovModel(n_states), waiting, method="em", seed=0, progress=False)
    ax = fit.plot()
    path = fit.predict(waiting).numpy()
    _same_partition(_strip_colors(ax, len(waiting)), path)
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), waiting)
    # the panel below stacks the posterior probabilities of the states, in the strips' colours
    assert len(ax.figure.axes) == 2
    panel = ax.figure.axes[1]
    layers = [c for c in panel.collections if isinstance(c, PolyCollection)]
    assert len(layers) == n_states
    proba = fit.predict_proba(waiting).numpy()
    strip_color = {tuple(np.round(c, 6)) for c in _strip_colors(ax, len(waiting))[path == 0]}
    assert strip_color == {tuple(np.round(layers[0].get_facecolor()[0, :3], 6))}
    top = max(layers[-1].get_paths()[0].vertices[:, 1])
    assert top == pytest.approx(1.0) and proba.sum(1) == pytest.approx(1.0)


def test_hmm_picture_of_one_sequence_of_many_without_posteriors():
    rng = np.random.default_rng(2)
    seqs = [rng.normal(size=(40, 2)) + 3 * (np.arange(40)[:, None] // 10 % 2), rng.normal(size=(25, 2))]
    fit = pg.fit(HiddenMarkovModel(2), seqs, method="em", seed=0, progress=False)
    fig, ax = plt.subplots()
    assert fit.plot(ax=ax, sequence=0, feature=1, posteriors=False) is ax
    assert len(fig.axes) == 1
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), seqs[0][:, 1])
    _same_partition(_strip_colors(ax, 40), fit.predict(seqs)[0].numpy())
    ax = fit.plot(sequence=1)
    assert len(ax.get_lines()[0].get_ydata()) == 25
    with pytest.raises(ValueError, match=r"sequence=2 is out of range; the data have 2 sequences"):
        fit.plot(sequence=2)
    with pytest.raises(ValueError, match=r"feature=2 is out of range; the data have 2 features"):
        fit.plot(feature=2)
    with pytest.raises(TypeError, match=r"posteriors must be a bool"):
        fit.plot(posteriors="yes")
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['features'\]"):
        fit.plot(features=(0, 1))


def test_categorical_hmm_picture_draws_the_symbols():
    rng = np.random.default_rng(3)
    x = np.r_[rng.integers(0, 2, 30), rng.integers(2, 4, 30)]
    fit = pg.fit(HiddenMarkovModel(2, "categorical"), x, method="em", seed=0, progress=False)
    ax = fit.plot()
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), x)
    _same_partition(_strip_colors(ax, 60), fit.predict(x).numpy())


def test_hmm_window_draws_those_steps_and_keeps_the_legend_off_the_data(waiting):
    fit = pg.fit(HiddenMarkovModel(3), waiting, method="em", seed=0, progress=False)
    ax = fit.plot(window=(40, 100))
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(40, 100))
    np.testing.assert_array_equal(line.get_ydata(), waiting[40:100])
    path = fit.predict(waiting).numpy()[40:100]  # decoded on the whole series
    strips = _strip_colors_from(ax, 40, 100)
    _same_partition(strips, path)
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, not over the series
    with pytest.raises(ValueError, match=r"window=\(5, 5\) holds no step"):
        fit.plot(window=(5, 5))
    with pytest.raises(TypeError, match=r"window must be a pair of ints"):
        fit.plot(window=5)


def _strip_colors_from(ax, lo: int, hi: int) -> np.ndarray:
    (strips,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    per_step = np.empty((hi - lo, 3))
    for path, color in zip(strips.get_paths(), strips.get_facecolors()[:, :3], strict=True):
        x = path.vertices[:, 0]
        per_step[np.arange(int(np.ceil(x.min())), int(np.floor(x.max())) + 1) - lo] = color
    return per_step


# -------------------------------------------------------------------------- Bayesian network
def test_network_names_sit_in_boxes_and_unknown_options_are_refused():
    import networkx as nx

    from probgen.models import BayesianNetwork

    dag = nx.DiGraph([("HYPOVOLEMIA", "LVEDVOLUME"), ("A", "LVEDVOLUME")])
    ax = BayesianNetwork(dag).plot_fit(None, {})
    labels = {t.get_text(): t for t in ax.texts}
    assert set(labels) == set(dag.nodes)
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    for t in labels.values():  # every name inside its own box
        box, text = t.get_bbox_patch().get_window_extent(renderer), t.get_window_extent(renderer)
        assert box.x0 <= text.x0 and text.x1 <= box.x1
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['colour'\]"):
        BayesianNetwork(dag).plot_fit(None, {}, colour="red")


# -------------------------------------------------------------------------------------- VAE
def _images(ax) -> list[np.ndarray]:
    return [np.asarray(a.get_array()) for a in ax.get_children() if isinstance(a, AxesImage)]


@pytest.fixture(scope="module")
def binary_items():
    import torch

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(120, 16, generator=gen) > 0.5).float()
    x[:60, :8] = 1.0
    return x


def test_vae_latent_points_are_the_encoder_means_and_the_panels_its_decoder(binary_items):
    import torch

    from probgen.models import VAE

    x = binary_items
    fit = pg.fit(VAE(16, 2, hidden_dims=(8,)), x, num_steps=20, seed=0, progress=False)
    labels = np.r_[np.zeros(60), np.ones(60)]
    ax = fit.plot(labels=labels, n_items=5, grid=3)
    loc = fit.encode(x)[0]
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points.get_offsets(), loc.numpy(), rtol=1e-6)
    _same_partition(points.get_facecolors()[:, :3], labels.astype(int))
    assert len(ax.figure.axes) == 3
    recon = _images(ax.figure.axes[1])
    assert len(recon) == 2 * 5  # items above their reconstructions
    for i in range(5):
        np.testing.assert_array_equal(recon[i], x[i].reshape(4, 4).numpy())
        np.testing.assert_allclose(
            recon[5 + i], fit.decode(loc[i : i + 1])[0].reshape(4, 4).numpy(), rtol=1e-6
        )
    grid = _images(ax.figure.axes[2])
    assert len(grid) == 9
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([0.05, 0.95]))
    top_left = fit.decode(torch.stack([q[0], q[1]])[None])[0]  # z_1 smallest, z_2 largest
    np.testing.assert_allclose(grid[0], top_left.reshape(4, 4).numpy(), rtol=1e-6)


def test_conditional_vae_of_three_latent_dims_shows_principal_components_and_lines(binary_items):
    import torch

    from probgen.models import ConditionalVAE

    x, y = binary_items[:, :10], torch.arange(120) % 3
    fit = pg.fit(ConditionalVAE(3, 3, 10, hidden_dims=(8,)), (x, y), num_steps=20, seed=0, progress=False)
    ax = fit.plot(n_items=4)
    assert len(ax.figure.axes) == 2  # no decoded grid for a 3-D latent space
    loc = fit.model.encode(fit, x, y)[0].numpy()
    centred = loc - loc.mean(0)
    pcs = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    drawn = points.get_offsets()
    for j in range(2):  # a principal axis has no sign
        assert np.allclose(drawn[:, j], pcs[:, j], atol=1e-5) or np.allclose(
            drawn[:, j], -pcs[:, j], atol=1e-5
        )
    _same_partition(points.get_facecolors()[:, :3], y.numpy())  # coloured by class
    assert ax.get_xlabel().startswith("PC 1")
    lines = ax.figure.axes[1].get_lines()
    assert len(lines) == 2 * 4  # each item (solid) with its reconstruction (dashed)
    assert [line.get_linestyle() for line in lines[:2]] == ["-", "--"]


def test_vae_picture_options_are_checked(binary_items):
    from probgen.models import VAE

    fit = pg.fit(VAE(16, 2, hidden_dims=(8,)), binary_items, num_steps=5, seed=0, progress=False)
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['colour'\]"):
        fit.plot(colour="red")
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['y'\]"):
        fit.plot(y=1)  # an unlabelled VAE has no class to decode for
    with pytest.raises(ValueError, match=r"latent='tsne' is not known"):
        fit.plot(latent="tsne")
    with pytest.raises(ValueError, match=r"labels must hold one label per item, shape \(120,\)"):
        fit.plot(labels=[0, 1])
    with pytest.raises(ValueError, match=r"grid must be a positive int"):
        fit.plot(grid=0)


# -------------------------------------------------------------------------------------- RBM
def test_rbm_draws_one_filter_per_hidden_unit_and_the_free_energy(binary_items):
    from probgen.models import RBM

    x = binary_items
    fit = pg.fit(RBM(16, 6), x, method="cd", num_steps=30, seed=0, progress=False)
    ax = fit.plot(samples=50, burn_in=20)
    filters = _images(ax)
    assert len(filters) == 6  # n_hidden
    W = fit.params["W"].numpy()
    for j, img in enumerate(filters):
        np.testing.assert_array_equal(img, W[j].reshape(4, 4))
    hist = ax.figure.axes[1]
    bars = [p for p in hist.patches if p.get_fill()]
    edges = np.r_[[b.get_x() for b in bars], bars[-1].get_x() + bars[-1].get_width()]
    expected = np.histogram(fit.free_energy(x).numpy(), bins=edges, density=True)[0]
    np.testing.assert_allclose([b.get_height() for b in bars], expected, rtol=1e-5)
    assert len(hist.get_legend().get_texts()) == 2  # data and model samples
    fit10 = pg.fit(RBM(10, 3), x[:, :10], method="cd", num_steps=10, seed=0, progress=False)
    ax = fit10.plot(samples=0)
    np.testing.assert_array_equal(_images(ax)[0], fit10.params["W"].numpy())  # not square: a heat map
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['labels'\]"):
        fit.plot(labels=None)


# -------------------------------------------------------------------------------------- GAN
def test_gan_title_holds_the_mmd_of_the_samples_it_draws():
    import torch

    from probgen.metrics import mmd
    from probgen.models import GAN

    x = torch.randn(150, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 0.3])
    fit = pg.fit(GAN(2, 2, hidden_dims=(8,)), x, method="adversarial", num_steps=20, seed=0, progress=False)
    ax = fit.plot(n_samples=80)
    data, samples = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(data, x.numpy())
    np.testing.assert_array_equal(samples, fit.sample(80, seed=0).numpy())
    assert ax.get_title().endswith(f"MMD\u00b2 to the data = {mmd(samples, data):.4g}")
    images = pg.fit(
        GAN(16, 2, hidden_dims=(8,)), torch.rand(40, 16), method="adversarial", num_steps=5, seed=0
    )
    ax = images.plot()
    assert [len(_images(a)) for a in ax.figure.axes] == [36, 36]  # data, samples
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['labels'\]"):
        fit.plot(labels=None)


# ---------------------------------------------------------------------------------- CharRNN
def test_char_rnn_bars_are_the_surprisal_of_each_character():
    from probgen.models import CharRNN

    text = "the cat sat on the mat. the dog sat on the log.\n" * 6
    fit = pg.fit(CharRNN(hidden_size=8, seq_len=16), text, num_steps=10, seed=0, progress=False)
    probe = "the cat sat on the log"
    ax = fit.plot(text=probe)
    heights = np.array([b.get_height() for b in ax.patches])
    assert len(heights) == len(probe)
    assert heights.sum() == pytest.approx(-fit.log_prob(probe).item(), rel=1e-6)  # -log p(text)
    for t in (1, 5, len(probe)):  # each bar: -log p(c_t | c_<t) = log p(prefix) - log p(longer prefix)
        step = fit.log_prob(probe[: t - 1]).item() if t > 1 else 0.0
        assert heights[t - 1] == pytest.approx(step - fit.log_prob(probe[:t]).item(), abs=1e-4)
    assert [t.get_text() for t in ax.get_xticklabels()][:4] == ["t", "h", "e", "\u2423"]
    assert len(fit.plot(max_chars=30).patches) == 30  # default: the training text, cut
    with pytest.raises(ValueError, match=r"outside the model's vocabulary"):
        fit.plot(text="xyz!")
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['labels'\]"):
        fit.plot(labels=None)


# ------------------------------------------------------------------------------- user model
def _normal_model():
    import pyro
    import pyro.distributions as dist

    @pg.model
    def normal(data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
        with pyro.plate("data", 50 if data is None else len(data)):
            pyro.sample("obs", dist.Normal(mu, sigma), obs=data)

    return normal


@pytest.fixture(scope="module")
def normal_items():
    return np.random.default_rng(0).normal(3.0, 2.0, 60)


def _check_line(ax) -> np.ndarray:
    """The predictive check's data line (black, drawn last) and its bin centres."""
    line = ax.get_lines()[-1]
    assert line.get_color() == "k"
    return np.asarray(line.get_xdata()), np.asarray(line.get_ydata())


def test_user_model_posterior_picture_is_a_forest_and_a_predictive_check(normal_items):
    fit = pg.fit(
        _normal_model(),
        normal_items,
        method="mcmc",
        num_samples=30,
        warmup_steps=30,
        num_chains=2,
        seed=0,
        progress=False,
    )
    ax = fit.plot(num_ppc_samples=10)
    assert {t.get_text() for t in ax.get_yticklabels()} >= {"mu", "sigma"}
    check = ax.figure.axes[-1]
    assert len(check.get_lines()) == 10 + 1
    mids, dens = _check_line(check)
    obs = normal_items.astype(np.float32).astype(float)  # as the model reads them (its dtype)
    edges = np.histogram_bin_edges(obs, bins="auto")
    np.testing.assert_allclose(mids, (edges[:-1] + edges[1:]) / 2)
    np.testing.assert_allclose(dens, np.histogram(obs, bins=edges, density=True)[0])
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['features'\] for fit.plot of normal"):
        fit.plot(features=(0, 1))
    with pytest.raises(ValueError, match=r"var_names \['tau'\] are not global sites"):
        fit.plot(var_names=["tau"])


def test_user_model_point_fit_draws_bars_of_its_estimates_and_replicates_of_them(normal_items):
    fit = pg.fit(_normal_model(), normal_items, method="em", seed=0, progress=False)
    ax = fit.plot()
    widths = {t.get_text(): b.get_width() for t, b in zip(ax.get_yticklabels(), ax.patches, strict=True)}
    assert widths == pytest.approx({k: float(fit.params[k]) for k in ("mu", "sigma")})
    check = ax.figure.axes[-1]
    assert len(check.get_lines()) == 50 + 1
    assert "point estimate" in check.get_title()


def test_hand_drawn_forest_marks_means_and_central_intervals():
    from probgen._fallback_plot import _forest

    rng = np.random.default_rng(1)
    draws = {"a": rng.normal(size=400), "b": rng.normal(size=(400, 2)) + [5.0, -5.0]}
    fig, ax = plt.subplots()
    _forest(ax, draws)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b[0]", "b[1]"][::-1] or [
        t.get_text() for t in ax.get_yticklabels()
    ] == ["a", "b[0]", "b[1]"]
    *intervals, means = ax.get_lines()
    rows = [draws["a"], draws["b"][:, 0], draws["b"][:, 1]]
    np.testing.assert_allclose(means.get_xdata(), [r.mean() for r in rows])
    for line, r in zip(intervals, rows, strict=True):
        np.testing.assert_allclose(line.get_xdata(), np.quantile(r, [0.03, 0.97]))
