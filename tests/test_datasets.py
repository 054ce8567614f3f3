"""Tests for skcfx.datasets."""

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from skcfx.datasets import (
    SHAPES_ATTRIBUTES,
    load_digits_images,
    load_image_folder,
    make_or_class,
    make_shapes,
)

# ------------------------------------------------------------------------------------------ digits


def test_load_digits_images_shapes_and_range():
    X, y = load_digits_images(image_size=16)
    assert X.shape == (1797, 16, 16, 1) and X.dtype == np.float32
    assert y.dtype == np.int64 and set(y.tolist()) == set(range(10))
    assert X.min() >= 0.0 and X.max() <= 1.0 and X.max() > 0.95
    # Bicubic upsampling keeps the ink: mean brightness barely changes.
    X8, _ = load_digits_images(image_size=8)
    assert abs(X.mean() - X8.mean()) < 0.02


def test_load_digits_images_native_size_is_exact_and_n_class_filters():
    X, y = load_digits_images(image_size=8, n_class=3)
    digits = load_digits(n_class=3)
    np.testing.assert_allclose(X[..., 0], digits.images / 16.0, rtol=1e-6)
    assert set(y.tolist()) == {0, 1, 2}


def test_load_digits_images_rejects_bad_size():
    with pytest.raises(ValueError, match="image_size"):
        load_digits_images(image_size=0)


# ------------------------------------------------------------------------------------------ shapes


def _object_mask(image):
    """Pixels of the red or blue main object (stripes excluded)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return (r - g > 0.3) | (b - g > 0.3)


def _is_round(image, shape, rows, cols):
    """1 if the object's bounding-box corners are much less covered than its edge midpoints."""
    saturation = image.max(axis=-1) - image.min(axis=-1)
    box = saturation[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = shape
    corners = box[[0, 0, -1, -1], [0, -1, 0, -1]].sum()
    middles = box[[0, h // 2, h // 2, -1], [w // 2, 0, -1, w // 2]].sum()
    return int(corners < 0.6 * middles)


def _measured_attributes(image):
    """Read the attributes off a noise-free scene with simple pixel rules.

    The shape rule only holds for plain objects (stripes may blank the corner rows), so the shape
    is returned as None for striped ones.
    """
    size = image.shape[0]
    mask = _object_mask(image)
    rows, cols = np.nonzero(mask)
    box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    white = image.min(axis=-1) > 0.9  # stripes; the light background stays below 0.9
    green = (image[..., 1] - image[..., 0] > 0.4) & (image[..., 1] - image[..., 2] > 0.3)
    edge, background = image[0, size // 2], image[size // 8, size // 2]
    has_stripes = int(white.sum() >= 2)
    return {
        "shape_is_circle": None if has_stripes else _is_round(image, box.shape, rows, cols),
        "color_is_red": int(image[mask, 0].mean() > image[mask, 2].mean()),
        "is_large": int(box.shape[1] >= 9),  # stripes are horizontal: the width is intact
        "has_stripes": has_stripes,
        "dark_background": int(background.mean() < 0.4),
        "on_left": int(cols.mean() < size / 2),
        "has_border": int(edge[0] > 0.8 and edge[2] < 0.4),
        "has_second_object": int(green.sum() >= 4),
    }


def test_make_shapes_shapes_dtypes_and_attributes():
    X, attributes = make_shapes(50, random_state=0)
    assert X.shape == (50, 32, 32, 3) and X.dtype == np.float32
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert tuple(attributes) == SHAPES_ATTRIBUTES and len(SHAPES_ATTRIBUTES) >= 8
    for value in attributes.values():
        assert value.shape == (50,) and value.dtype == np.int8
        assert set(np.unique(value).tolist()) <= {0, 1}


def test_make_shapes_attributes_are_visible_in_the_pixels():
    X, attributes = make_shapes(400, random_state=1, noise=0.0)
    n_shapes_checked = 0
    for i in range(len(X)):
        measured = _measured_attributes(X[i])
        expected = {name: int(value[i]) for name, value in attributes.items()}
        if measured["shape_is_circle"] is None:
            measured["shape_is_circle"] = expected["shape_is_circle"]
        else:
            n_shapes_checked += 1
        assert measured == expected, f"image {i}"
    assert n_shapes_checked > 150


def test_make_shapes_is_seeded():
    X1, a1 = make_shapes(20, random_state=5)
    X2, a2 = make_shapes(20, random_state=5)
    X3, _ = make_shapes(20, random_state=6)
    np.testing.assert_array_equal(X1, X2)
    for name in SHAPES_ATTRIBUTES:
        np.testing.assert_array_equal(a1[name], a2[name])
    assert not np.array_equal(X1, X3)


def test_make_shapes_other_sizes_keep_the_same_scenes():
    _, a32 = make_shapes(10, random_state=2)
    X64, a64 = make_shapes(10, image_size=64, random_state=2)
    assert X64.shape == (10, 64, 64, 3)
    for name in SHAPES_ATTRIBUTES:
        np.testing.assert_array_equal(a32[name], a64[name])


def _corr(a, b):
    return np.corrcoef(a.astype(float), b.astype(float))[0, 1]


def test_make_shapes_correlation_strength():
    n = 4000
    _, independent = make_shapes(n, image_size=8, random_state=0)
    _, strong = make_shapes(n, image_size=8, random_state=0, correlation=0.8)
    _, copied = make_shapes(n, image_size=8, random_state=0, correlation=1.0)
    for source, target in [("shape_is_circle", "is_large"), ("color_is_red", "has_stripes")]:
        assert abs(_corr(independent[source], independent[target])) < 0.06
        assert abs(_corr(strong[source], strong[target]) - 0.8) < 0.05
        np.testing.assert_array_equal(copied[source], copied[target])
        assert abs(strong[target].mean() - 0.5) < 0.04  # marginals stay balanced
    # Pairs not listed stay independent.
    assert abs(_corr(copied["on_left"], copied["has_border"])) < 0.06


def test_make_shapes_custom_and_bad_pairs():
    _, a = make_shapes(500, image_size=8, random_state=0, correlation=1.0,
                       correlated_pairs=[("on_left", "has_border")])
    np.testing.assert_array_equal(a["on_left"], a["has_border"])
    assert abs(_corr(a["shape_is_circle"], a["is_large"])) < 0.15
    with pytest.raises(ValueError, match="correlated_pairs"):
        make_shapes(5, correlated_pairs=[("on_left", "no_such_attribute")])
    with pytest.raises(ValueError, match="correlated_pairs"):
        make_shapes(5, correlated_pairs=[("on_left", "on_left")])
    with pytest.raises(ValueError, match="correlated_pairs"):
        make_shapes(5, correlated_pairs=["on_left"])
    with pytest.raises(ValueError, match="target twice"):
        make_shapes(5, correlated_pairs=[("on_left", "is_large"), ("has_border", "is_large")])


@pytest.mark.parametrize(
    "kwargs, name",
    [({"n_samples": 0}, "n_samples"), ({"image_size": 4}, "image_size"),
     ({"correlation": 1.5}, "correlation"), ({"noise": -0.1}, "noise")],
)
def test_make_shapes_bad_parameters(kwargs, name):
    params = {"n_samples": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        make_shapes(**params)


def test_make_or_class():
    y, sub = make_or_class({"a": np.array([0, 1, 0, 1]), "b": [0, 0, 1, 1], "c": [1, 1, 1, 1]},
                           "a", "b")
    assert y.tolist() == [0, 1, 1, 1] and y.dtype == np.int64
    assert sub.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="a='z' is not an attribute"):
        make_or_class({"a": [0]}, "z", "a")
    with pytest.raises(ValueError, match="two different"):
        make_or_class({"a": [0]}, "a", "a")


# -------------------------------------------------------------------------------- image folders


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folder(tmp_path):
    """Two classes ('cat' after 'bird' when sorted), mixed gray/RGB images and noise files."""
    root = tmp_path / "data"
    rgb = np.zeros((20, 40, 3), dtype=np.uint8)
    rgb[:, 10:30, 1] = 255  # green centre, black sides: a centre crop is all green
    _save(root / "cat" / "wide.png", rgb)
    _save(root / "cat" / "gray.png", np.full((8, 8), 128, dtype=np.uint8))
    _save(root / "bird" / "white.jpg", np.full((16, 16, 3), 255, dtype=np.uint8))
    (root / "bird" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_load_image_folder_keeps_uint8(folder):
    X, y, names = load_image_folder(folder, 10)
    assert X.dtype == np.uint8 and X.shape == (3, 10, 10, 3) and X.flags.c_contiguous
    as_float, y_float, _ = load_image_folder(folder, 10, dtype="float32")
    np.testing.assert_array_equal(X.astype(np.float32) / 255.0, as_float)
    assert y.tolist() == y_float.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="dtype"):
        load_image_folder(folder, 10, dtype="float16")


def test_load_image_folder(folder):
    X, y, names = load_image_folder(folder, 10, dtype="float32")
    assert names == ["bird", "cat"]
    assert X.shape == (3, 10, 10, 3) and X.dtype == np.float32
    assert y.tolist() == [0, 1, 1] and y.dtype == np.int64
    assert X[0].min() > 0.95  # white jpeg
    # cat/gray.png sorts before cat/wide.png; gray is repeated over RGB.
    np.testing.assert_allclose(X[1], 128 / 255, atol=1e-6)
    # Centre crop: only the green middle is kept (the bicubic kernel reaches 1 pixel beyond).
    np.testing.assert_allclose(X[2][:, 1:-1, 1], 1.0, atol=0.02)
    assert X[2][..., 1].min() > 0.9
    np.testing.assert_allclose(X[2][..., [0, 2]], 0.0, atol=0.02)


def test_load_image_folder_stretch_and_rectangular_size(folder):
    X, _, _ = load_image_folder(folder, (6, 12), center_crop=False, dtype="float32")
    assert X.shape == (3, 6, 12, 3)
    wide = X[2]
    assert wide[:, 0, 1].max() < 0.1 and wide[:, 6, 1].min() > 0.9  # black sides are kept


def test_load_image_folder_channels(folder, tmp_path):
    X, _, _ = load_image_folder(folder, 4, grayscale=True, dtype="float32")
    assert X.shape[-1] == 1
    np.testing.assert_allclose(X[2, 1, 2, 0], 0.587, atol=0.02)  # luma of pure green
    gray_root = tmp_path / "gray"
    _save(gray_root / "x" / "a.png", np.zeros((5, 5), dtype=np.uint8))
    _save(gray_root / "y" / "b.png", np.full((5, 5), 65535, dtype=np.uint16))  # 16-bit
    X, y, _ = load_image_folder(gray_root, 5, dtype="float32")
    assert X.shape == (2, 5, 5, 1)
    np.testing.assert_allclose(X[1], 1.0, atol=1e-4)
    assert load_image_folder(gray_root, 5)[0][1].min() == 255  # 16-bit white is uint8 white


def test_load_image_folder_errors(folder, tmp_path):
    with pytest.raises(ValueError, match="not an existing folder"):
        load_image_folder(tmp_path / "missing", 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(empty, 8)
    (empty / "only_text").mkdir()
    (empty / "only_text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="only_text.*holds no image files"):
        load_image_folder(empty, 8)
    (folder / "cat" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(folder, 8)
    with pytest.raises(TypeError, match="image_size"):
        load_image_folder(folder, 8.5)
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(folder, (0, 4))
