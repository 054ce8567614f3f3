"""DiffAEEncoder: shapes, determinism, persistence, faults and bad input."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone

from skcfx import DiffAEEncoder
from skcfx.diffusion.nets import DiffAENet
from skcfx.diffusion.training import TrainingDivergedError




def test_shapes_and_dtypes(fitted_tiny_encoder, digits8):
    X, _ = digits8
    enc = fitted_tiny_encoder
    Z = enc.transform(X[:5])
    assert Z.shape == (5, 8) and Z.dtype == np.float32
    noise = enc.encode_stochastic(X[:5])
    assert noise.shape == (5, 8, 8, 1) and noise.dtype == np.float32
    assert np.isfinite(noise).all() and noise.std() > 0.1  # network units, not [0, 1]
    recon = enc.reconstruct(X[:5])
    assert recon.shape == (5, 8, 8, 1) and recon.dtype == np.float32
    assert recon.min() >= 0 and recon.max() <= 1
    assert enc.inverse_transform(Z).shape == (5, 8, 8, 1)
    assert enc.n_steps_ == 20 and enc.loss_history_.shape == (20,)
    assert enc.image_shape_ == (8, 8, 1)


def test_inverted_noise_reconstructs_better_than_random(fitted_tiny_encoder, digits8):
    X, _ = digits8
    enc = fitted_tiny_encoder
    Z = enc.transform(X[:16])
    with_noise = enc.inverse_transform(Z, noise=enc.encode_stochastic(X[:16], Z))
    random = enc.inverse_transform(Z)
    err_inv = np.mean((with_noise - X[:16]) ** 2)
    err_rand = np.mean((random - X[:16]) ** 2)
    assert err_inv < err_rand


def test_training_is_reproducible(digits8, tiny_encoder_factory):
    X, _ = digits8
    a = tiny_encoder_factory(max_steps=5).fit(X[:64])
    b = tiny_encoder_factory(max_steps=5).fit(X[:64])
    np.testing.assert_array_equal(a.transform(X[:4]), b.transform(X[:4]))
    np.testing.assert_array_equal(a.inverse_transform(a.transform(X[:4])), b.inverse_transform(b.transform(X[:4])))
    c = tiny_encoder_factory(max_steps=5, random_state=1).fit(X[:64])
    assert not np.array_equal(a.transform(X[:4]), c.transform(X[:4]))


def test_pickle_and_joblib_round_trip(fitted_tiny_encoder, digits8, tmp_path):
    X, _ = digits8
    enc = fitted_tiny_encoder
    Z = enc.transform(X[:6])
    again = pickle.loads(pickle.dumps(enc))
    np.testing.assert_array_equal(again.transform(X[:6]), Z)
    joblib.dump(enc, tmp_path / "enc.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "enc.joblib").transform(X[:6]), Z)


def test_save_load_weights_only(fitted_tiny_encoder, digits8, tmp_path):
    X, _ = digits8
    enc = fitted_tiny_encoder
    path = enc.save(tmp_path / "enc.pt")
    payload = torch.load(path, weights_only=True)  # no code can run while loading
    assert payload["format"] == "skcfx"
    loaded = DiffAEEncoder.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.transform(X[:6]), enc.transform(X[:6]))
    assert loaded.get_params()["encode_steps"] == enc.encode_steps
    assert loaded.n_steps_ == enc.n_steps_


def test_version_mismatch_warns(fitted_tiny_encoder, tmp_path, monkeypatch):
    path = fitted_tiny_encoder.save(tmp_path / "enc.pt")
    import skcfx._encoder_io as module

    monkeypatch.setattr(module, "__version__", "99.0")
    with pytest.warns(UserWarning, match="saved by skcfx"):
        DiffAEEncoder.load(path, device="cpu")


def test_pickle_from_cuda_maps_to_cpu(fitted_tiny_encoder, digits8):
    # Simulate a pickle made on a GPU machine: device_ says cuda.
    state = fitted_tiny_encoder.__getstate__()
    state["device_"] = "cuda:0"
    clone_ = DiffAEEncoder.__new__(DiffAEEncoder)
    if torch.cuda.is_available():
        pytest.skip("CUDA is available; the CPU fallback is not exercised")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        clone_.__setstate__(state)
    assert clone_.device_.type == "cpu"
    X, _ = digits8
    assert clone_.transform(X[:2]).shape == (2, 8)


def test_clone_and_get_params(tiny_encoder_factory):
    enc = tiny_encoder_factory(max_steps=7)
    params = enc.get_params()
    assert params["max_steps"] == 7 and params["architecture"]["model_channels"] == 8
    cloned = clone(enc)
    assert cloned.get_params()["max_steps"] == 7
    assert not hasattr(cloned, "net_")


def test_warm_start_continues(digits8, tiny_encoder_factory):
    X, _ = digits8
    enc = tiny_encoder_factory(max_steps=6).fit(X[:64])
    enc.set_params(warm_start=True, max_steps=10)
    enc.fit(X[:64])
    assert enc.n_steps_ == 10 and len(enc.loss_history_) == 10
    # Same end state as an uninterrupted 10-step run.
    ref = tiny_encoder_factory(max_steps=10).fit(X[:64])
    np.testing.assert_allclose(enc.transform(X[:4]), ref.transform(X[:4]), atol=1e-6)


def test_interrupt_keeps_partial_model_and_resumes(digits8, tiny_encoder_factory, monkeypatch):
    X, _ = digits8
    import skcfx.diffusion.training as training

    original = training.train_diffae

    def interrupted(*args, **kwargs):
        calls = {"n": 0}

        def callback(info):
            calls["n"] += 1
            if info["step"] == 4:
                raise KeyboardInterrupt

        kwargs["callback"] = callback
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "train_diffae", interrupted)
    enc = tiny_encoder_factory(max_steps=10)
    with pytest.raises(KeyboardInterrupt):
        enc.fit(X[:64])
    assert enc.n_steps_ == 4  # usable partial model
    assert enc.transform(X[:2]).shape == (2, 8)
    monkeypatch.setattr(training, "train_diffae", original)
    enc.set_params(warm_start=True)
    enc.fit(X[:64])
    ref = tiny_encoder_factory(max_steps=10).fit(X[:64])
    assert enc.n_steps_ == 10
    for a, b in zip(enc.net_.state_dict().values(), ref.net_.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _NaNAfter(DiffAENet):
    """A network whose noise prediction turns NaN from its ``after + 1``-th training call on."""

    after = 3

    def forward(self, x_t, t, cond=None):
        eps = super().forward(x_t, t, cond=cond)
        if self.training:
            self.n_train_calls = getattr(self, "n_train_calls", 0) + 1
            if self.n_train_calls > self.after:
                eps = eps * float("nan")
        return eps


class _DivergingEncoder(DiffAEEncoder):
    def initialize_module(self, image_shape, seed):
        net = super().initialize_module(image_shape, seed)
        diverging = _NaNAfter(net.config)
        diverging.load_state_dict(net.state_dict())
        return diverging


def test_divergence_raises_and_keeps_last_good(digits8, tiny_encoder_factory):
    X, _ = digits8
    params = tiny_encoder_factory(max_steps=10).get_params()
    enc = _DivergingEncoder(**params)
    with pytest.raises(TrainingDivergedError, match="diverged at step 4: loss nan") as info:
        enc.fit(X[:64])
    # The bad update was not applied: the estimator is fitted with the 3 good steps.
    assert info.value.step == 4 and info.value.state.step == 3
    assert enc.n_steps_ == 3 and enc.loss_history_.shape == (3,) and np.isfinite(enc.loss_history_).all()
    assert all(torch.isfinite(p).all() for p in enc.net_.parameters())
    reference = tiny_encoder_factory(max_steps=3).fit(X[:64])  # the same 3 steps, without the fault
    for key, value in reference.net_.state_dict().items():
        torch.testing.assert_close(enc.net_.state_dict()[key], value, rtol=0, atol=0)


def test_checkpoint_resume(digits8, tiny_encoder_factory, tmp_path):
    X, _ = digits8
    ckpt = tmp_path / "train.ckpt"
    first = tiny_encoder_factory(max_steps=4, checkpoint_path=str(ckpt), checkpoint_every=2).fit(X[:64])
    assert ckpt.is_file() and first.n_steps_ == 4
    resumed = tiny_encoder_factory(max_steps=8, checkpoint_path=str(ckpt), checkpoint_every=2).fit(X[:64])
    assert resumed.n_steps_ == 8
    ref = tiny_encoder_factory(max_steps=8).fit(X[:64])
    np.testing.assert_allclose(resumed.transform(X[:4]), ref.transform(X[:4]), atol=1e-6)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda e, X: e.transform(np.zeros((2, 16, 16, 1))), ValueError, "8x8"),
        (lambda e, X: e.transform(np.zeros((2, 8, 8, 3))), ValueError, "channel"),
        (lambda e, X: e.transform(np.full((2, 8, 8), np.nan)), ValueError, "NaN"),
        (lambda e, X: e.transform(X[:0]), ValueError, "empty"),
        (lambda e, X: e.inverse_transform(np.zeros((2, 5))), ValueError, "features"),
        (lambda e, X: e.inverse_transform(np.full((2, 8), np.inf)), ValueError, "NaN or infinite"),
        (lambda e, X: e.inverse_transform(np.zeros((2, 8)), noise=np.zeros((3, 8, 8, 1))), ValueError, "noise"),
        (lambda e, X: e.encode_stochastic(X[:2], Z=np.zeros((3, 8))), ValueError, "rows"),
        (lambda e, X: e.transform(torch.zeros(2, 8, 8)), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_raises_and_leaves_state(fitted_tiny_encoder, digits8, call, exc, match):
    X, _ = digits8
    before = {k: v.clone() for k, v in fitted_tiny_encoder.net_.state_dict().items()}
    with pytest.raises(exc, match=match):
        call(fitted_tiny_encoder, X)
    after = fitted_tiny_encoder.net_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"max_steps": -1}, "max_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "device"),
        ({"latent_dropout": 1.5}, "latent_dropout"),
        ({"architecture": "nope"}, "nope"),
        ({"image_size": 16}, "image_size"),
    ],
)
def test_bad_params_raise_at_fit(digits8, tiny_encoder_factory, params, match):
    X, _ = digits8
    with pytest.raises((ValueError, TypeError), match=match):
        tiny_encoder_factory(**params).fit(X[:16])


def test_unfitted_raises(digits8):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DiffAEEncoder().transform(digits8[0][:2])
