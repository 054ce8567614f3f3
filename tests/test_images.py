"""Tests for the image input/output contract (skcfx._images)."""

import numpy as np
import pytest
import torch
from PIL import Image

from skcfx._images import check_images, iter_batches, to_numpy, to_tensor


def test_uint8_grayscale_becomes_float_nhwc():
    X = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4) * 7
    out = check_images(X)
    assert out.shape == (2, 4, 4, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], X / 255.0, rtol=0, atol=1e-7)


def test_float_input_is_copied_not_modified():
    X = np.random.default_rng(0).random((3, 5, 5, 3))
    before = X.copy()
    out = check_images(X)
    out[:] = 0
    np.testing.assert_array_equal(X, before)


def test_pil_and_paths(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [(rng.random((6, 6, 3)) * 255).astype(np.uint8) for _ in range(2)]
    pils = [Image.fromarray(a) for a in arrays]
    paths = []
    for i, im in enumerate(pils):
        p = tmp_path / f"im{i}.png"
        im.save(p)
        paths.append(p)
    from_pil = check_images(pils)
    from_paths = check_images([str(p) for p in paths])
    np.testing.assert_allclose(from_pil, np.stack(arrays) / 255.0, atol=1e-7)
    np.testing.assert_allclose(from_paths, from_pil)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.full((2, 4, 4), np.nan), ValueError, "NaN"),
        (np.full((2, 4, 4), 1.5), ValueError, r"\[0, 1\]"),
        (np.zeros((4, 4)), ValueError, "shape"),
        (np.zeros((2, 4, 4, 2)), ValueError, "channels"),
        (np.zeros((0, 4, 4)), ValueError, "empty"),
        (np.zeros((2, 4, 4), dtype=np.int64), TypeError, "uint8"),
        ("image.png", TypeError, "single path"),
        (torch.zeros(2, 4, 4), TypeError, "torch.Tensor"),
        ([1, 2], TypeError, "PIL.Image"),
        (42, TypeError, "numpy array"),
    ],
)
def test_bad_inputs_raise_with_argument_name(bad, exc, match):
    with pytest.raises(exc, match=match):
        check_images(bad, name="X")
    with pytest.raises(exc) as info:
        check_images(bad, name="queries")
    assert "queries" in str(info.value)


def test_unreadable_file_is_named(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        check_images([p])
    with pytest.raises(ValueError, match="no such image"):
        check_images([tmp_path / "missing.png"])


def test_size_and_channel_checks():
    X = np.zeros((1, 8, 8, 1), dtype=np.float32)
    check_images(X, image_size=8, n_channels=1)
    with pytest.raises(ValueError, match="16x16"):
        check_images(X, image_size=16)
    with pytest.raises(ValueError, match="3 channel"):
        check_images(X, n_channels=3)


def test_tensor_round_trip():
    X = np.random.default_rng(1).random((2, 5, 7, 3)).astype(np.float32)
    x = to_tensor(X)
    assert x.shape == (2, 3, 5, 7)
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(to_numpy(x), X, atol=1e-6)


def test_iter_batches_covers_range():
    slices = list(iter_batches(10, 4))
    assert [s.stop - s.start for s in slices] == [4, 4, 2]
    with pytest.raises(ValueError):
        list(iter_batches(3, 0))
