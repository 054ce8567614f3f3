"""DISSECT's jointly learned concept traversals (skcfx.methods.dissect).

Most checks use a stand-in diffusion autoencoder whose decode writes the latent into the first
pixels (differentiably), with a classifier that reads the first pixel: training then has a
signal a few steps can follow, and closed forms (strength 0 = the query) hold exactly. The
explainer tests use the real tiny DiffAE of conftest.py.
"""

import numpy as np
import pytest
import torch

from skcfx import CounterfactualExplainer
from skcfx._image_sources import as_image_source
from skcfx.classifiers import as_proba_model
from skcfx.diffusion import NFECounter
from skcfx.methods import DISSECT, CounterfactualMethod, ExplainContext, create_method, list_methods

LATENT_DIM = 4
SLOPE, THRESHOLD = 8.0, 0.2  # classifier: p(class 1) = sigmoid(SLOPE * (pixel0 - THRESHOLD))


class _ExactModel:
    """DiffAE stand-in: ``encode`` reads the first pixels, ``decode`` writes ``z`` there."""

    T = 1000
    has_null_latent = False
    latent_dim = LATENT_DIM
    image_shape = (1, 8, 8)

    def encode(self, x_0, *, requires_grad=False):
        return x_0.flatten(1)[:, :LATENT_DIM].clone()

    def invert(self, x_0, z, n_steps, *, counter=None):
        if counter is not None:
            counter.add(x_0.shape[0] * n_steps)
        return x_0.clone()

    def decode(self, z, x_T, n_steps, *, counter=None, requires_grad=False, checkpoint=False, **_):
        if counter is not None:
            counter.add(z.shape[0] * n_steps)
        with torch.set_grad_enabled(requires_grad):
            flat = x_T.flatten(1)
            out = torch.cat([torch.tanh(z), flat[:, LATENT_DIM:]], dim=1)
            return out.reshape(x_T.shape)


class _FirstPixel(torch.nn.Module):
    def forward(self, x):
        logit = SLOPE * (x[:, 0, 0, 0] - THRESHOLD)
        return torch.stack([-logit / 2, logit / 2], dim=1)


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.2, 0.8, size=(n, 8, 8, 1)).astype(np.float32)
    X[:, 0, 0, 0] = rng.uniform(0.05, 0.95, size=n)  # pixel 0 spans both classes
    return X


def _context(X=None, seed=0):
    X = _images() if X is None else X
    return ExactContext(X, seed)


def ExactContext(X, seed):
    return ExplainContext(
        model=_ExactModel(), encode_steps=3, decode_steps=2, direction_finder=None,
        proba_model=as_proba_model(_FirstPixel(), image_shape=(8, 8, 1)), device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed), class_of_index=np.array([0, 1]),
        training_images=as_image_source(X),
    )


def _latents(context):
    X = context.training_images.numpy(range(len(context.training_images)))
    return context.model.encode(torch.as_tensor(X).permute(0, 3, 1, 2) * 2 - 1).numpy()


def _fit(seed=0, **params):
    context = _context(seed=seed)
    defaults = dict(n_steps=40, batch_size=8, learning_rate=0.05, train_decode_steps=1, decode_steps=1)
    method = DISSECT(**{**defaults, **params}).fit(context, _latents(context), None)
    return method, context


@pytest.fixture(scope="module")
def trained():
    return _fit(n_concepts=3)


def _negatives(context, n=6):
    X = context.training_images.numpy(range(len(context.training_images)))
    x = torch.as_tensor(X).permute(0, 3, 1, 2) * 2 - 1
    return x[x[:, 0, 0, 0] < 0][:n]


def _target_proba(context, images, target=1):
    return context.proba_model.torch_proba(images.flatten(0, 1))[:, target].reshape(images.shape[:2])


# --------------------------------------------------------------------------------------------------


def test_registered_by_name():
    assert "dissect" in list_methods()
    method = create_method("dissect")
    assert isinstance(method, DISSECT) and method.needs_training_images and method.needs_gradients


def test_training_reduces_its_losses(trained):
    method, _ = trained
    h = method.history_
    assert len(h["loss"]) == 40
    first, last = slice(0, 8), slice(-8, None)
    for key in ("loss", "importance", "distinctness"):
        assert np.mean(h[key][last]) < np.mean(h[key][first]), key
    assert np.mean(h["posterior_accuracy"][last]) > 1 / 3


def test_k_traversals_give_k_different_counterfactuals(trained):
    method, context = trained
    x = _negatives(context)
    out = method.generate(context, x, np.ones((len(x), 1), dtype=int))
    assert out.counterfactuals.shape == (len(x), 3) + tuple(x.shape[1:])
    np.testing.assert_array_equal(out.mode_ids, np.tile(np.arange(3), (len(x), 1)))
    np.testing.assert_array_equal(out.cf_target, np.ones((len(x), 3)))
    cf = out.counterfactuals
    for a in range(3):
        for b in range(a + 1, 3):
            assert (cf[:, a] - cf[:, b]).abs().amax() > 1e-2


def test_strength_zero_returns_the_reconstruction(trained):
    method, context = trained
    x = _negatives(context)
    out = method.generate(context, x, np.ones((len(x), 1), dtype=int), strength=0.0)
    reconstruction = context.model.decode(context.model.encode(x), x, 1)
    for k in range(3):
        torch.testing.assert_close(out.counterfactuals[:, k], reconstruction)
    np.testing.assert_array_equal(out.alphas, 0.0)


def test_classifier_output_rises_with_strength(trained):
    method, context = trained
    x = _negatives(context)
    targets = np.ones((len(x), 1), dtype=int)
    p = [float(_target_proba(context, method.generate(context, x, targets, strength=s).counterfactuals).mean())
         for s in (0.0, 0.5, 1.0)]
    assert p[0] < p[1] < p[2]
    assert p[2] > 0.5  # strength 1 flips the (easy) classifier on average


def test_nfe_is_counted_exactly(trained):
    method, context = trained
    x = _negatives(context, 4)
    out = method.generate(context, x, np.ones((4, 1), dtype=int))
    # inversion (encode_steps=3) per query + decode_steps=1 per counterfactual (3 concepts)
    assert out.n_function_evals == 4 * 3 + 4 * 3 * 1
    # and training spent: inversion + reconstruction per image, then K decodes per image and step
    assert method.train_nfe_ == 48 * 1 * 2 + 40 * 8 * 3 * 1


def test_padded_targets_leave_query_slots():
    method, context = _fit(n_steps=2, n_concepts=2)
    x = _negatives(context, 2)
    out = method.generate(context, x, np.array([[1], [-1]]))
    assert out.cf_target.tolist() == [[1, 1], [-1, -1]]
    torch.testing.assert_close(out.counterfactuals[1, 0], x[1])


def test_fit_is_reproducible_with_a_seed():
    a, _ = _fit(seed=3, n_steps=5)
    b, _ = _fit(seed=3, n_steps=5)
    c, _ = _fit(seed=4, n_steps=5)
    assert a.history_ == b.history_
    for pa, pb in zip(a.traversals_.parameters(), b.traversals_.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert a.history_ != c.history_


@pytest.mark.parametrize("params, match", [
    ({"n_concepts": 0}, "n_concepts"),
    ({"strength": 1.5}, "strength"),
    ({"n_steps": 0}, "n_steps"),
    ({"hidden_dim": -1}, "hidden_dim"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"train_decode_steps": 0}, "train_decode_steps"),
    ({"distinctness_weight": -1.0}, "distinctness_weight"),
])
def test_bad_parameters_raise(params, match):
    context = _context()
    with pytest.raises(ValueError, match=match):
        DISSECT(**params).fit(context, _latents(context), None)


def test_non_differentiable_classifier_is_rejected():
    context = _context()
    context.proba_model = as_proba_model(lambda X: np.tile([0.3, 0.7], (len(X), 1)), image_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="dissect.*not differentiable"):
        DISSECT().fit(context, _latents(context), None)


def test_missing_training_images_are_rejected():
    context = _context()
    Z = _latents(context)
    context.training_images = None
    with pytest.raises(ValueError, match="needs the training images"):
        DISSECT().fit(context, Z, None)


# --------------------------------------------------------------------------------------------------
# through the explainer, with the real tiny DiffAE


class _Recorder(CounterfactualMethod):
    """Records what the explainer hands to fit (not registered)."""

    name = "recorder"
    needs_training_images = True

    def fit(self, context, Z, y):
        self.n_images_ = len(context.training_images)
        first = torch.as_tensor(context.training_images.numpy([0]))
        self.first_image_ = first.numpy()
        self.has_generator_ = context.generator is not None
        return self


def test_explainer_passes_training_images_only_when_asked(fitted_tiny_encoder, digits8):
    X, y = digits8
    yb = (y[:40] >= 5).astype(int)
    clf = _FirstPixel()
    explainer = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=clf, method=_Recorder(),
                                        random_state=0).fit(X[:40], yb)
    assert explainer.method_.n_images_ == 40 and explainer.method_.has_generator_
    np.testing.assert_allclose(explainer.method_.first_image_[0], X[0])


@pytest.fixture(scope="module")
def small_net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)).eval()


def _explainer(encoder, net, X, y, seed=0, **params):
    method = DISSECT(**{**dict(n_steps=3, batch_size=4, train_decode_steps=2, decode_steps=2,
                               max_train_images=16), **params})
    return CounterfactualExplainer(encoder=encoder, classifier=net, method=method,
                                   random_state=seed).fit(X, y)


def test_explainer_end_to_end_and_reproducible(fitted_tiny_encoder, small_net, digits8):
    X, y = digits8
    X, yb = X[:40], (y[:40] >= 5).astype(int)
    explainer = _explainer(fitted_tiny_encoder, small_net, X, yb)
    explanation = explainer.explain(X[:3])
    assert explanation.counterfactuals.shape == (3, 2, 8, 8, 1)
    assert explanation.method == "dissect"
    np.testing.assert_array_equal(explanation.mode_ids, np.tile([0, 1], (3, 1)))
    # inversion (encode_steps=4) shared by the 2 concepts + 2 decode steps per counterfactual
    assert explanation.n_function_evals == pytest.approx(4 / 2 + 2)
    again = _explainer(fitted_tiny_encoder, small_net, X, yb).explain(X[:3])
    np.testing.assert_array_equal(again.counterfactuals, explanation.counterfactuals)
    assert again.info["method_params"]["n_concepts"] == 2


def test_strength_zero_through_the_real_decoder(fitted_tiny_encoder, small_net, digits8):
    X, y = digits8
    explainer = _explainer(fitted_tiny_encoder, small_net, X[:40], (y[:40] >= 5).astype(int), strength=0.0)
    explanation = explainer.explain(X[:2])
    model = fitted_tiny_encoder.model_
    x = torch.as_tensor(X[:2]).permute(0, 3, 1, 2) * 2 - 1
    z = model.encode(x)
    reconstruction = model.decode(z, model.invert(x, z, 4), 2)
    expected = ((reconstruction.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1).numpy()
    for k in range(2):
        np.testing.assert_allclose(explanation.counterfactuals[:, k], expected, atol=1e-5)
