"""The DiffAE shipped inside the package: small, weights only, and as good as documented."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcfx import DiffAEEncoder
from skcfx.datasets import load_digits_images
from skcfx.pretrained import get_spec, list_pretrained, load_pretrained, pretrained_path


@pytest.fixture(scope="module")
def split():
    # The split the shipped model was trained on (benchmarks/_common.py::digits_split).
    X, y = load_digits_images(image_size=16)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def encoder():
    return DiffAEEncoder.from_pretrained("digits16", device="cpu")


def test_shipped_file_is_small_and_loads_as_weights_only():
    assert list_pretrained() == ["digits16"]
    path = pretrained_path("digits16")
    assert path.stat().st_size < 3_000_000
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no code can run
    assert payload["format"] == "skcfx" and set(payload) == {"format", "version", "config", "state_dict", "extra"}
    with pytest.raises(ValueError, match="digits16"):
        get_spec("imagenet")


def test_from_pretrained_by_name(encoder):
    assert encoder.image_shape_ == (16, 16, 1) and encoder.n_steps_ == 10000
    assert encoder.config_.null_latent and encoder.latent_dropout == 0.1
    assert encoder.device == "cpu" and encoder.verbose is False
    assert load_pretrained("digits16", device="cpu").get_params() == encoder.get_params()


def test_reconstructs_held_out_digits_at_the_documented_error(encoder, split):
    _, X_test, _, _ = split
    images = X_test[:64]
    mse = float(np.mean((2 * encoder.reconstruct(images) - 2 * images) ** 2))
    # The documented figure was measured on 200 held-out digits; 64 of them vary by about 20%.
    assert mse < 1.5 * get_spec("digits16").reconstruction_mse, mse


def test_latent_knows_the_digit(encoder, split):
    # Inverted noise reconstructs even with an untrained network; the latent of a trained one
    # tells the digit (0.77 with 3 training steps, see benchmarks/results/pretrained_digits16.json).
    X_train, X_test, y_train, y_test = split
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(encoder.transform(X_train), y_train)
    assert probe.score(encoder.transform(X_test), y_test) > get_spec("digits16").latent_probe_accuracy - 0.02


def test_partial_inversion_keeps_more_of_the_image(encoder, split):
    # Inverting 3 of 10 DDIM steps and decoding from there (DifCluE's edit_depth) passes through
    # less of the chain than the full round trip, so the image comes back closer.
    from skcfx._images import to_tensor

    _, X_test, _, _ = split
    x = to_tensor(X_test[:32])
    model = encoder.model_
    z = model.encode(x)
    errors = {}
    for stop in (3, None):
        x_t = model.invert(x, z, 10, stop_index=stop)
        errors[stop] = float(((model.decode(z, x_t, 10, start_index=stop) - x) ** 2).mean())
    assert errors[3] < errors[None], errors
