"""Tests for skcfx.classifiers: TimmClassifier and the classifier adapters."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import timm
import torch
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from skcfx._images import to_tensor
from skcfx.classifiers import (
    FeatureExtractor,
    ProbaModel,
    TimmClassifier,
    as_proba_model,
    feature_extractor,
)
from skcfx.classifiers.timm import _random_shift
from skcfx.datasets import load_digits_images

# A tiny timm architecture (0.37M parameters) that trains in about a second on a few hundred
# 16x16 digits; the default 'resnet18' works the same way but is slower.
TINY = "test_resnet"


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits_images(image_size=16)
    order = np.random.default_rng(0).permutation(len(y))
    return X[order], y[order]


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    clf = TimmClassifier(TINY, max_epochs=8, batch_size=32, random_state=0)
    return clf.fit(X[:300], y[:300])


def _small_fit(digits, **params):
    X, y = digits
    params = {"max_epochs": 2, "batch_size": 16, "random_state": 0, **params}
    return TimmClassifier(TINY, **params).fit(X[:48], y[:48])


# ------------------------------------------------------------------------------ TimmClassifier


def test_fit_learns_digits(fitted, digits):
    X, y = digits
    accuracy = fitted.score(X[1000:1300], y[1000:1300])
    assert accuracy > 0.8, accuracy
    assert fitted.image_shape_ == (16, 16, 1)
    np.testing.assert_array_equal(fitted.classes_, np.arange(10))
    assert fitted.device_ == torch.device("cpu")
    assert not fitted.module_.training
    assert [h["epoch"] for h in fitted.history_] == list(range(1, 9)) and fitted.n_iter_ == 8
    assert fitted.history_[-1]["train_loss"] < fitted.history_[0]["train_loss"]


def test_predict_proba_rows_sum_to_one_and_match_predict(fitted, digits):
    X, _ = digits
    proba = fitted.predict_proba(X[1000:1040])
    assert proba.shape == (40, 10) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(fitted.predict(X[1000:1040]), fitted.classes_[proba.argmax(1)])
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X[1000:1040])), proba, atol=1e-9)


def test_accepts_uint8_and_pil_like_float(fitted, digits):
    X, _ = digits
    as_uint8 = np.round(X[1000:1005] * 255).astype(np.uint8)
    np.testing.assert_allclose(
        fitted.predict_proba(as_uint8), fitted.predict_proba(as_uint8 / 255.0), atol=1e-6
    )


def test_string_labels_and_leftover_single_image(digits):
    X, y = digits
    # 49 images in batches of 16 leave one image alone, which BatchNorm cannot train on.
    labels = np.where(y[:49] % 2 == 0, "even", "odd")
    clf = TimmClassifier(TINY, max_epochs=1, batch_size=16, random_state=0).fit(X[:49], labels)
    assert clf.classes_.tolist() == ["even", "odd"]
    assert set(clf.predict(X[49:60])) <= {"even", "odd"}


def test_estimator_conventions():
    clf = TimmClassifier(TINY, max_epochs=3, model_kwargs={"drop_rate": 0.1})
    assert is_classifier(clf)
    assert clone(clf).get_params() == clf.get_params()
    if hasattr(clf, "__sklearn_tags__"):  # scikit-learn >= 1.6
        tags = clf.__sklearn_tags__()
        assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array


def test_same_random_state_gives_identical_predictions(digits):
    X, _ = digits
    state_before = torch.get_rng_state()
    first = _small_fit(digits).predict_proba(X[100:120])
    second = _small_fit(digits).predict_proba(X[100:120])
    other = _small_fit(digits, random_state=1).predict_proba(X[100:120])
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)
    # Seeding is local: the caller's global torch RNG is left as it was.
    assert torch.equal(torch.get_rng_state(), state_before)


def test_augment_and_verbose(digits, capsys):
    X, y = digits
    clf = TimmClassifier(TINY, max_epochs=2, batch_size=16, augment=True, verbose=True,
                         random_state=0).fit(X[:48], y[:48])
    assert len(clf.history_) == 2
    assert "TimmClassifier(test_resnet)" in capsys.readouterr().err


def test_random_shift_moves_whole_pixels():
    x = -torch.ones(64, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    shifted = _random_shift(x, torch.Generator().manual_seed(0))
    assert set(shifted.unique().tolist()) == {-1.0, 1.0}
    rows, cols = torch.nonzero(shifted[:, 0] == 1.0)[:, 1:].T
    assert len(rows) == 64  # one bright pixel per image, nothing blurred or lost
    assert (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # shifts vary between images


def test_joblib_round_trip_is_identical(fitted, digits, tmp_path):
    X, _ = digits
    path = tmp_path / "clf.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X[:50]), fitted.predict_proba(X[:50]))
    assert hasattr(fitted, "module_")  # pickling does not strip the original
    assert not loaded.module_.training


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a machine without CUDA")
def test_cuda_fitted_pickle_loads_on_cpu(fitted, digits):
    X, _ = digits
    state = fitted.__getstate__()
    state["device_"] = torch.device("cuda")  # as if fitted on a GPU machine
    payload = pickle.dumps(state)
    clone = TimmClassifier.__new__(TimmClassifier)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        clone.__setstate__(pickle.loads(payload))
    assert clone.device_ == torch.device("cpu")
    np.testing.assert_array_equal(clone.predict_proba(X[:20]), fitted.predict_proba(X[:20]))


def test_wrong_image_size_or_channels_raise_naming_X(fitted, digits):
    X, _ = digits
    with pytest.raises(ValueError, match=r"X images must be 16x16"):
        fitted.predict(X[:4, :8, :8])
    with pytest.raises(ValueError, match=r"X images must have 1 channel"):
        fitted.predict_proba(np.repeat(X[:4], 3, axis=-1))
    with pytest.raises(ValueError, match="X"):
        fitted.predict(np.full((2, 16, 16), np.nan))


def test_unfitted_predict_raises(digits):
    with pytest.raises(NotFittedError):
        TimmClassifier(TINY).predict(digits[0][:2])


@pytest.mark.parametrize(
    "params, y_change, exc, match",
    [
        ({}, lambda y: y[:-1], ValueError, "labels but X has"),
        ({}, lambda y: np.zeros_like(y), ValueError, "at least two classes"),
        ({"model_name": "no_such_net"}, None, ValueError, "not a timm architecture"),
        ({"model_kwargs": {"num_classes": 3}}, None, ValueError, "must not set"),
        ({"model_kwargs": {"bogus": 1}}, None, TypeError, "model_kwargs"),
        ({"max_epochs": 0}, None, ValueError, "max_epochs"),
        ({"learning_rate": -1.0}, None, ValueError, "learning_rate"),
        ({"device": "tpu"}, None, ValueError, "device"),
    ],
)
def test_fit_rejects_bad_input(digits, params, y_change, exc, match):
    X, y = digits[0][:16], digits[1][:16]
    if y_change is not None:
        y = y_change(y)
    params = {"model_name": TINY, "max_epochs": 1, **params}
    with pytest.raises(exc, match=match):
        TimmClassifier(**params).fit(X, y)


def test_failed_fit_leaves_previous_fit_untouched(digits):
    X, y = digits
    clf = _small_fit(digits)
    module, proba = clf.module_, clf.predict_proba(X[:10])
    with pytest.raises(ValueError):
        clf.fit(X[:16], np.zeros(16))
    assert clf.module_ is module
    np.testing.assert_array_equal(clf.predict_proba(X[:10]), proba)


def test_too_small_images_raise_a_clear_error(digits):
    X, y = digits
    # ConvNeXt's stride-4 stem plus stride-2 stages cannot run on 4x4 images.
    with pytest.raises(ValueError, match=r"cannot classify 4x4 images"):
        TimmClassifier("test_convnext", max_epochs=1).fit(X[:16, 6:10, 6:10], y[:16])


def test_fixed_size_models_get_img_size_from_X(digits):
    X, y = digits
    clf = TimmClassifier("vit_tiny_patch16_224", max_epochs=1, batch_size=16, random_state=0,
                         model_kwargs={"patch_size": 4, "depth": 1}).fit(X[:16], y[:16])
    assert clf.predict_proba(X[:3]).shape == (3, len(np.unique(y[:16])))


def test_rgb_images(digits):
    X, y = digits
    rgb = np.repeat(X[:32], 3, axis=-1)
    rgb[..., 0] *= 0.5  # channels differ
    clf = TimmClassifier(TINY, max_epochs=1, batch_size=16, random_state=0).fit(rgb, y[:32])
    assert clf.image_shape_ == (16, 16, 3)
    assert clf.predict_proba(rgb[:4]).shape == (4, len(clf.classes_))


# ------------------------------------------------------------------------------ adapters


def test_timm_classifier_adapter_is_differentiable(fitted, digits):
    X, _ = digits
    model = as_proba_model(fitted, image_shape=(16, 16, 1))
    assert model.differentiable and model.n_classes == 10
    np.testing.assert_array_equal(model.classes_, fitted.classes_)
    np.testing.assert_allclose(model.predict_proba(X[:20]), fitted.predict_proba(X[:20]), atol=1e-6)
    x = to_tensor(X[:4]).requires_grad_(True)
    logits = model.torch_logits(x)
    logits[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    np.testing.assert_allclose(model.torch_proba(x).detach().sum(1).numpy(), 1.0, atol=1e-5)
    assert as_proba_model(model) is model


def test_device_copy_is_independent(fitted, digits):
    X, _ = digits
    copy = fitted._copy_to(torch.device("cpu"))
    assert copy.module_ is not fitted.module_
    np.testing.assert_array_equal(copy.predict_proba(X[:8]), fitted.predict_proba(X[:8]))
    assert as_proba_model(fitted, device="cpu").estimator is fitted  # same device: no copy


def test_timm_classifier_adapter_rejects_other_sizes(fitted):
    with pytest.raises(ValueError, match="image_shape"):
        as_proba_model(fitted, image_shape=(32, 32, 1))
    with pytest.raises(NotFittedError):
        as_proba_model(TimmClassifier(TINY))


def test_timm_module_adapter(digits):
    X, _ = digits
    torch.manual_seed(0)
    net = timm.create_model(TINY, num_classes=3, in_chans=1).train()
    model = as_proba_model(net, image_shape=(16, 16, 1))
    assert not net.training  # wrapped modules are explained in eval mode
    assert model.differentiable and model.n_classes == 3
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    with torch.no_grad():
        expected = torch.softmax(net(to_tensor(X[:5])), dim=1).double().numpy()
    np.testing.assert_allclose(model.predict_proba(X[:5]), expected, atol=1e-6)
    x = to_tensor(X[:2]).requires_grad_(True)
    model.torch_logits(x)[:, 0].sum().backward()
    assert x.grad.abs().sum() > 0
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X[:5]), model.predict_proba(X[:5]))


def test_module_input_range(digits):
    X, _ = digits
    torch.manual_seed(0)
    net = timm.create_model(TINY, num_classes=2, in_chans=1)
    model = as_proba_model(net, input_range=(0, 1))
    x = to_tensor(X[:3])
    with torch.no_grad():
        np.testing.assert_allclose(model.torch_logits(x), net((x + 1) / 2), atol=1e-6)
        assert not torch.allclose(model.torch_logits(x), net(x), atol=1e-3)
    with pytest.raises(ValueError, match="input_range"):
        as_proba_model(lambda im: np.full((len(im), 2), 0.5), input_range=(0, 1))


def test_sklearn_adapter_on_flattened_pixels():
    X, y = load_digits_images(image_size=8)
    flat = X.reshape(len(X), -1)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    for clf in (LogisticRegression(max_iter=200), pipeline):
        clf.fit(flat[:500], y[:500])
        model = as_proba_model(clf, image_shape=(8, 8, 1))
        assert not model.differentiable and model.n_classes == 10
        np.testing.assert_array_equal(model.classes_, clf.classes_)
        np.testing.assert_allclose(model.predict_proba(X[500:520]), clf.predict_proba(flat[500:520]))
        x = to_tensor(X[500:520])
        proba = model.torch_proba(x)
        assert proba.shape == (20, 10) and proba.requires_grad is False
        np.testing.assert_allclose(proba.numpy(), clf.predict_proba(flat[500:520]), atol=1e-5)
        np.testing.assert_allclose(torch.softmax(model.torch_logits(x), 1).numpy(), proba.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="fitted on 64 features"):
        as_proba_model(clf, image_shape=(16, 16, 1))


def test_unfitted_or_non_probabilistic_sklearn_raises():
    with pytest.raises(NotFittedError, match="not fitted"):
        as_proba_model(LogisticRegression())
    with pytest.raises(TypeError, match="predict_proba"):
        as_proba_model(SVC())


def test_callable_adapter_learns_n_classes_lazily():
    def brightness(images):
        p = images.mean(axis=(1, 2, 3))
        return np.column_stack([1 - p, p])

    model = as_proba_model(brightness)
    with pytest.raises(ValueError, match="image_shape"):
        model.n_classes
    proba = model.predict_proba(np.full((3, 6, 6, 1), 0.25))
    np.testing.assert_allclose(proba, [[0.75, 0.25]] * 3)
    assert model.n_classes == 2 and not model.differentiable
    np.testing.assert_allclose(model.torch_proba(torch.zeros(2, 1, 6, 6)).numpy(), [[0.5, 0.5]] * 2)


@pytest.mark.parametrize(
    "output, match",
    [
        (lambda n: np.full(n, 0.5), "shaped"),
        (lambda n: np.full((n, 3), 0.5), "do not sum to 1"),
        (lambda n: np.full((n, 2), np.nan), "NaN"),
        (lambda n: np.tile([1.5, -0.5], (n, 1)), r"outside \[0, 1\]"),
        (lambda n: np.full((n + 1, 2), 0.5), "shaped"),
    ],
)
def test_bad_callable_output_raises(output, match):
    def fn(images):
        return output(len(images))

    with pytest.raises(ValueError, match=match):
        as_proba_model(fn, image_shape=(6, 6, 1))  # probed at once
    lazy = as_proba_model(fn)
    with pytest.raises(ValueError, match=match):
        lazy.predict_proba(np.zeros((2, 6, 6)))


def test_duck_typed_predict_proba_and_broken_module():
    class Uniform:  # has predict_proba but no fit: treated as a ready model
        def predict_proba(self, flat):
            return np.full((len(flat), 4), 0.25)

    model = as_proba_model(Uniform(), image_shape=(4, 4, 3))
    assert model.n_classes == 4
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"failed on images shaped \(8, 8, 1\)"):
        as_proba_model(net, image_shape=(8, 8, 1))  # expects 4x4 images


def test_changing_class_count_is_caught():
    calls = iter([np.full((2, 2), 0.5), np.full((2, 3), 1 / 3)])
    model = as_proba_model(lambda images: next(calls), image_shape=(4, 4, 1))
    with pytest.raises(ValueError, match="expected 2"):
        model.predict_proba(np.zeros((2, 4, 4)))


@pytest.mark.parametrize("obj", [42, "resnet18", np.zeros(3)])
def test_unsupported_objects_raise_type_error(obj):
    with pytest.raises(TypeError, match="TimmClassifier.*torch.nn.Module.*scikit-learn.*callable"):
        as_proba_model(obj)


def test_tensor_and_image_checks(fitted):
    model = as_proba_model(fitted)
    with pytest.raises(ValueError, match=r"x must be shaped \(n, 1, 16, 16\)"):
        model.torch_logits(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="x must be a"):
        model.torch_logits(torch.zeros(16, 16))
    with pytest.raises(ValueError, match="images"):
        model.predict_proba(np.zeros((2, 8, 8)))
    assert isinstance(model, ProbaModel)


# ------------------------------------------------------------------------------ features


def test_feature_extractor_matches_pre_logits(fitted, digits):
    X, _ = digits
    features = feature_extractor(fitted)
    assert isinstance(features, FeatureExtractor)
    out = features(X[:6])
    module = fitted.module_
    with torch.no_grad():
        x = to_tensor(X[:6])
        expected = module.forward_head(module.forward_features(x), pre_logits=True)
    assert out.shape == (6, module.num_features) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)
    x = to_tensor(X[:2]).requires_grad_(True)
    features.torch_features(x).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0


def test_feature_extractor_needs_a_timm_network():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=50).fit(np.random.default_rng(0).random((20, 16)),
                                                 np.arange(20) % 2)
    with pytest.raises(TypeError, match="forward_features"):
        feature_extractor(lr)
    with pytest.raises(TypeError, match="forward_features"):
        feature_extractor(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)))
