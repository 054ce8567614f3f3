"""Tests of DiME and FastDiME (skcfx.methods.dime).

Counting tests use a denoiser that costs nothing (a stand-in encoder), so the published setting
(tau=60 of 200 steps, 1830 calls per attempt) runs in a fraction of a second; the rest use the
tiny fitted DiffAE of conftest with short chains.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from skcfx import CounterfactualExplainer
from skcfx.classifiers import as_proba_model
from skcfx.diffusion import Schedule
from skcfx.diffusion.sampling import CountingDenoiser
from skcfx.methods import DiME, ExplainContext, FastDiME, create_method

# --------------------------------------------------------------------------------------------------
# stand-ins


class _CheapModel:
    """Just what the methods use of a DiffAE model object, with a denoiser that costs nothing."""

    def __init__(self, null_latent=True, T=1000):
        self.T = T
        self.has_null_latent = null_latent

    def schedule(self, n_steps):
        return Schedule.linear(T=self.T, n_steps=n_steps)

    @staticmethod
    def _eps(x_t, t, cond=None):
        if cond is not None:
            raise AssertionError("DiME must call the unconditional denoiser (cond=None)")
        return 0.1 * x_t

    def denoiser(self, counter=None, *, unconditional=False):
        if not unconditional:
            raise AssertionError("DiME must ask for the unconditional denoiser")
        return CountingDenoiser(self._eps, counter=counter)


class _LinearProba:
    """Differentiable linear 2-class model; ``script`` (list of bool arrays) overrides the flips."""

    differentiable = True

    def __init__(self, n_pixels=64, script=None):
        self.weight = torch.randn(n_pixels, 2, generator=torch.Generator().manual_seed(0))
        self.script = None if script is None else list(script)
        self.proba_batches = []

    def torch_logits(self, x):
        return x.flatten(1) @ self.weight

    def torch_proba(self, x):
        self.proba_batches.append(x.shape[0])
        if self.script is None:
            return torch.softmax(self.torch_logits(x), dim=1)
        reach_target = torch.as_tensor(self.script.pop(0))
        # Every test target is class 1: put the mass there when the script says "flipped".
        return torch.stack([(~reach_target).float(), reach_target.float()], dim=1)


class _TinyNet(torch.nn.Module):
    """A timm-like classifier (forward_features / forward_head) small enough for 8x8 images."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, x, pre_logits=False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _context(model=None, proba=None, seed=0):
    return ExplainContext(
        model=model if model is not None else _CheapModel(),
        encode_steps=10,
        decode_steps=10,
        direction_finder=None,
        proba_model=proba if proba is not None else _LinearProba(),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
        class_of_index=np.arange(2),
    )


def _queries(n=3, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def dime_encoder(digits8, tiny_encoder_factory):
    """A barely trained tiny DiffAE with a null latent: these tests need its calls, not its quality."""
    X, _ = digits8
    return tiny_encoder_factory(latent_dropout=0.1, max_steps=2).fit(X[:32])


@pytest.fixture(scope="module")
def binary_digits(digits8):
    X, y = digits8
    return X[:120], (y[:120] >= 5).astype(int)


@pytest.fixture(scope="module")
def tiny_net(binary_digits):
    """_TinyNet trained briefly on 'digit >= 5' (seeded), so its decisions mean something."""
    X, y = binary_digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = _TinyNet()
    x = torch.as_tensor(X).permute(0, 3, 1, 2) * 2 - 1
    target = torch.as_tensor(y)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), target).backward()
        optimizer.step()
    return net.eval()


# --------------------------------------------------------------------------------------------------
# registry and counting


def test_registered_by_name():
    assert isinstance(create_method("dime"), DiME)
    assert isinstance(create_method("fastdime"), FastDiME)
    assert DiME.needs_gradients and DiME.needs_unconditional and not DiME.needs_directions
    assert FastDiME().get_params()["mask_threshold"] == 0.15


@pytest.mark.parametrize("n_samples", [1, 2])
def test_dime_counts_1830_calls_per_attempt_at_published_setting(n_samples):
    x = _queries(2)
    method = DiME(n_samples, respacing=200, tau=60, lambda_c=(8,), perceptual=None)
    out = method.generate(_context(), x, np.array([[1], [1]]))
    assert out.n_function_evals == 1830 * 2 * n_samples
    assert out.counterfactuals.shape == (2, n_samples, 1, 8, 8)


@pytest.mark.parametrize("cls, per_attempt", [(DiME, 5 * 6 // 2), (FastDiME, 5)])
def test_counts_with_the_real_network(dime_encoder, cls, per_attempt):
    x = _queries(2)
    method = cls(respacing=20, tau=5, lambda_c=(8,), perceptual=None)
    out = method.generate(_context(model=dime_encoder.model_), x, np.array([[1], [0]]))
    assert out.n_function_evals == per_attempt * 2
    assert torch.isfinite(out.counterfactuals).all()
    assert out.counterfactuals.abs().max() <= 1


def test_retries_only_the_queries_that_did_not_flip():
    # Attempt 1 flips queries 0 and 2; attempt 2 (only query 1) flips it; no attempt 3.
    proba = _LinearProba(script=[np.array([True, False, True]), np.array([True])])
    method = DiME(respacing=20, tau=4, lambda_c=(1.0, 2.0, 3.0), perceptual=None)
    out = method.generate(_context(proba=proba), _queries(3), np.array([[1], [1], [1]]))
    assert proba.proba_batches == [3, 1]
    assert out.n_function_evals == (3 + 1) * (4 * 5 // 2)
    assert out.info["attempts_mean"] == pytest.approx(4 / 3)
    assert out.info["flipped_rate"] == 1.0


def test_unflipped_after_all_attempts_keeps_last_attempt():
    proba = _LinearProba(script=[np.array([False, True]), np.array([False])])
    method = FastDiME(respacing=20, tau=3, lambda_c=(1.0, 2.0), perceptual=None)
    out = method.generate(_context(proba=proba), _queries(2), np.array([[1], [1]]))
    assert proba.proba_batches == [2, 1]
    assert out.n_function_evals == (2 + 1) * 3
    assert out.info["flipped_rate"] == 0.5
    assert out.info["attempts_mean"] == 1.5


# --------------------------------------------------------------------------------------------------
# targets, layout and randomness


def test_one_slot_per_target_and_sample():
    targets = np.array([[1, 0], [0, -1]])
    out = FastDiME(2, respacing=20, tau=2, lambda_c=(8,), perceptual=None).generate(_context(), _queries(2), targets)
    assert out.counterfactuals.shape == (2, 4, 1, 8, 8)
    np.testing.assert_array_equal(out.cf_target, [[1, 1, 0, 0], [0, 0, -1, -1]])
    assert np.isnan(out.alphas).all() and (out.mode_ids == -1).all()
    # padding slots hold the query; the two samples of a pair differ (own noise each)
    torch.testing.assert_close(out.counterfactuals[1, 2], _queries(2)[1])
    assert not torch.equal(out.counterfactuals[0, 0], out.counterfactuals[0, 1])
    assert out.n_function_evals == 6 * 2


@pytest.mark.parametrize("cls", [DiME, FastDiME])
def test_same_generator_seed_gives_identical_counterfactuals(cls):
    method = cls(respacing=20, tau=4, perceptual=None)
    targets = np.array([[1], [0]])
    first = method.generate(_context(seed=3), _queries(2), targets).counterfactuals
    second = method.generate(_context(seed=3), _queries(2), targets).counterfactuals
    other = method.generate(_context(seed=4), _queries(2), targets).counterfactuals
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_guidance_raises_the_target_logit():
    proba = _LinearProba()
    x, targets = _queries(4), np.ones((4, 1), dtype=int)

    def target_logit(lambda_c):
        method = DiME(respacing=20, tau=6, lambda_c=(lambda_c,), lambda_l1=0.0, perceptual=None)
        cfs = method.generate(_context(proba=proba, seed=0), x, targets).counterfactuals[:, 0]
        return proba.torch_logits(cfs)[:, 1]

    weak, strong = target_logit(1e-6), target_logit(200.0)
    assert (strong > weak).all()


# --------------------------------------------------------------------------------------------------
# FastDiME mask


def _changed_pixels(out, x):
    return (out.counterfactuals[:, 0] != x).any(dim=1)  # (n, H, W)


def test_fastdime_mask_keeps_unchanged_pixels_equal_to_query():
    # Threshold 1 keeps every pixel whose dilated normalised change is below the maximum: with a
    # 3x3 window only a 3x3 neighbourhood of the most changed pixel may differ from the query.
    x = _queries(3)
    method = FastDiME(respacing=20, tau=4, perceptual=None, mask_threshold=1.0, dilation=3, mask_warmup=0.0)
    changed = _changed_pixels(method.generate(_context(), x, np.ones((3, 1), dtype=int)), x)
    for image in changed:
        rows, cols = torch.nonzero(image, as_tuple=True)
        assert 1 <= len(rows) <= 9
        assert rows.max() - rows.min() <= 2 and cols.max() - cols.min() <= 2


def test_fastdime_without_mask_changes_most_pixels():
    x = _queries(3)
    method = FastDiME(respacing=20, tau=4, perceptual=None, mask_threshold=None)
    changed = _changed_pixels(method.generate(_context(), x, np.ones((3, 1), dtype=int)), x)
    assert changed.float().mean() > 0.9


# --------------------------------------------------------------------------------------------------
# perceptual term


def test_perceptual_callable_is_used_on_clean_estimates():
    calls = []

    def distance(x_hat, x_0):
        calls.append((tuple(x_hat.shape), x_hat.requires_grad))
        return (x_hat - x_0).pow(2).flatten(1).sum(dim=1)

    method = FastDiME(respacing=20, tau=3, lambda_c=(8,), perceptual=distance, lambda_p=1.0)
    method.fit(_context(), None, None)
    assert method.perceptual_source_ == "callable"
    method.generate(_context(), _queries(2), np.array([[1], [1]]))
    assert calls == [((2, 1, 8, 8), True)] * 3


def test_perceptual_auto_uses_classifier_features_or_warns(tiny_net):
    context = _context(proba=as_proba_model(tiny_net, image_shape=(8, 8, 1)))
    assert DiME().fit(context, None, None).perceptual_source_ == "classifier"
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    context = _context(proba=as_proba_model(plain, image_shape=(8, 8, 1)))
    with pytest.warns(UserWarning, match="perceptual term is left out"):
        assert DiME().fit(context, None, None).perceptual_source_ == "none"
    # no warning when the user turned the term off
    assert DiME(lambda_p=0).fit(context, None, None).perceptual_source_ == "none"


# --------------------------------------------------------------------------------------------------
# errors


def test_error_without_null_latent():
    with pytest.raises(ValueError, match="unconditional denoiser.*latent_dropout"):
        DiME().fit(_context(model=_CheapModel(null_latent=False)), None, None)


def test_error_for_non_differentiable_classifier():
    proba = as_proba_model(lambda X: np.tile([0.3, 0.7], (len(X), 1)), image_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="needs gradients of the classifier.*not differentiable"):
        FastDiME().fit(_context(proba=proba), None, None)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"tau": 30, "respacing": 20}, "tau=30 must be at most respacing=20"),
        ({"respacing": 300}, "respacing=300 does not suit the encoder's T=1000"),
        ({"lambda_c": ()}, "lambda_c must be a positive number"),
        ({"lambda_c": (8, -1)}, "lambda_c must be a positive number"),
        ({"eta": 0.0}, "eta"),
        ({"class_loss": "hinge"}, "class_loss"),
    ],
)
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        DiME(**params).fit(_context(), None, None)


def test_even_dilation_is_rejected():
    with pytest.raises(ValueError, match="dilation must be an odd int"):
        FastDiME(dilation=4).generate(_context(), _queries(1), np.array([[1]]))


# --------------------------------------------------------------------------------------------------
# through the explainer


def test_explainer_end_to_end(dime_encoder, tiny_net, binary_digits):
    X, y = binary_digits
    method = DiME(2, respacing=20, tau=3, lambda_c=(8, 15))
    explainer = CounterfactualExplainer(
        encoder=dime_encoder, classifier=tiny_net, method=method, random_state=0
    ).fit(X[:64], y[:64])
    assert explainer.method_.perceptual_source_ == "classifier"
    explanation = explainer.explain(X[64:67])
    assert explanation.counterfactuals.shape == (3, 2, 8, 8, 1)
    assert explanation.counterfactuals.min() >= 0 and explanation.counterfactuals.max() <= 1
    opposite = 1 - explanation.original_proba.argmax(axis=1)
    np.testing.assert_array_equal(explanation.cf_target_class, np.repeat(opposite[:, None], 2, axis=1))
    attempts = explanation.info["attempts_mean"]
    assert 1 <= attempts <= 2
    # exact accounting: per counterfactual, tau (tau + 1) / 2 calls per attempt
    assert explanation.n_function_evals == pytest.approx(6 * attempts)
    again = explainer.explain(X[64:67])
    np.testing.assert_array_equal(again.counterfactuals, explanation.counterfactuals)


@pytest.mark.parametrize("latent_dropout, classifier, match", [
    (0.0, "net", "unconditional denoiser"),
    (0.1, "sklearn", "not differentiable"),
])
def test_explainer_rejects_unsuitable_models(tiny_encoder_factory, tiny_net, binary_digits, latent_dropout,
                                             classifier, match):
    from sklearn.linear_model import LogisticRegression

    X, y = binary_digits
    encoder = tiny_encoder_factory(latent_dropout=latent_dropout, max_steps=1).fit(X[:16])
    clf = tiny_net if classifier == "net" else LogisticRegression(max_iter=200).fit(X.reshape(len(X), -1), y)
    with pytest.raises(ValueError, match=match):
        CounterfactualExplainer(encoder=encoder, classifier=clf, method="fastdime").fit(X[:32], y[:32])
