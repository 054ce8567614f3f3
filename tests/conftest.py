"""Shared fixtures: tiny data and tiny fitted models, built once per session."""

import numpy as np
import pytest
import torch

# Tiny network for tests: 8x8 images, a few thousand parameters.
TINY_ARCH = {
    "model_channels": 8,
    "channel_mult": (1, 2),
    "enc_channel_mult": (1, 2),
    "attention_resolutions": (4,),
    "embed_channels": 16,
    "latent_dim": 8,
}


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # The test models are tiny: one thread avoids OpenMP overhead and contention (measured
    # up to 20x slower with 2 threads on a busy 2-core machine).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits8():
    """scikit-learn's digits as (n, 8, 8, 1) float32 images in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[..., None]
    return X, d.target


@pytest.fixture(scope="session")
def tiny_encoder_factory():
    from skcfx import DiffAEEncoder

    def make(**params):
        defaults = dict(architecture=TINY_ARCH, max_steps=20, batch_size=16, encode_steps=4,
                        decode_steps=4, random_state=0, device="cpu")
        defaults.update(params)
        return DiffAEEncoder(**defaults)

    return make


@pytest.fixture(scope="session")
def fitted_tiny_encoder(digits8, tiny_encoder_factory):
    X, _ = digits8
    return tiny_encoder_factory().fit(X[:200])
