"""load_fashion_mnist on tiny IDX files written on the fly (the real files may be absent in CI)."""

import gzip
import struct

import numpy as np
import pytest

from skcfx.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

OFFICIAL = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
            "Ankle boot"]


def _idx_bytes(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(folder, prefix, images, labels, compress):
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = _idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


def _tiny(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


@pytest.mark.parametrize("compress", [True, False])
def test_reads_gzip_and_plain_files_exactly(tmp_path, compress):
    images, labels = _tiny()
    _write(tmp_path, "train", images, labels, compress)
    X, y, names = load_fashion_mnist(tmp_path)
    assert X.dtype == np.uint8 and X.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(X[..., 0], images)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    assert names == OFFICIAL and list(FASHION_MNIST_CLASSES) == OFFICIAL


def test_subset_picks_the_test_files(tmp_path):
    train, test = _tiny(5, seed=0), _tiny(3, seed=1)
    _write(tmp_path, "train", *train, compress=True)
    _write(tmp_path, "t10k", *test, compress=False)
    X, y, _ = load_fashion_mnist(str(tmp_path), subset="test")
    np.testing.assert_array_equal(X[..., 0], test[0])
    np.testing.assert_array_equal(y, test[1])
    assert load_fashion_mnist(tmp_path, subset="train")[0].shape[0] == 5


def test_image_size_resizes_and_stays_uint8(tmp_path):
    images, labels = _tiny()
    images[:] = 0
    images[:, 7:21, 7:21] = 255  # a bright square survives resizing as a bright centre
    _write(tmp_path, "train", images, labels, compress=True)
    X, y, _ = load_fashion_mnist(tmp_path, image_size=14)
    assert X.shape == (5, 14, 14, 1) and X.dtype == np.uint8
    assert X[:, 7, 7, 0].min() > 200 and X[:, 0, 0, 0].max() < 30
    np.testing.assert_array_equal(y, labels)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path / "nowhere")
    assert "train-images-idx3-ubyte" in str(info.value)
    images, labels = _tiny()
    _write(tmp_path, "train", images, labels, compress=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path)


def test_bad_magic_number_is_refused(tmp_path):
    images, labels = _tiny()
    _write(tmp_path, "train", images, labels, compress=False)
    data = bytearray((tmp_path / "train-images-idx3-ubyte").read_bytes())
    data[2] = 0x0D  # float32 type code: not unsigned bytes
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="magic number"):
        load_fashion_mnist(tmp_path)


def test_truncated_and_mismatched_files_are_refused(tmp_path):
    images, labels = _tiny()
    _write(tmp_path, "train", images, labels, compress=False)
    data = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(tmp_path)
    _write(tmp_path, "train", images, labels[:4], compress=False)
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        load_fashion_mnist(tmp_path)


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="subset"):
        load_fashion_mnist(tmp_path, subset="validation")
    with pytest.raises(ValueError, match="image_size"):
        load_fashion_mnist(tmp_path, image_size=0)
    with pytest.raises((TypeError, ValueError), match="path"):
        load_fashion_mnist(3)
