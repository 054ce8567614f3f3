"""Small image datasets for examples, tests and benchmarks.

* :func:`load_digits_images`: scikit-learn's bundled handwritten digits as grayscale images.
* :func:`make_shapes`: procedurally drawn scenes with known binary attributes, some of which can be
  made to correlate, for counterfactual metrics that need ground truth (oracles, MNAC,
  correlation difference, percent conversion, mode recovery).
* :func:`load_image_folder`: images stored as ``root/<class>/<image>``.
* :func:`load_fashion_mnist`: Fashion-MNIST read from its IDX files (the Debian package
  ``dataset-fashion-mnist`` installs them).

They return images as arrays shaped ``(n, H, W, C)``: ``float32`` in [0, 1], except
:func:`load_image_folder`, which keeps ``uint8`` in 0..255 by default (``dtype='float32'`` on request),
and :func:`load_fashion_mnist`, which always returns ``uint8``.
"""

import gzip
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._images import check_image_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHAPES_ATTRIBUTES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_PATH",
    "SHAPES_CORRELATED_PAIRS",
    "load_digits_images",
    "load_fashion_mnist",
    "load_image_folder",
    "make_or_class",
    "make_shapes",
]

# -------------------------------------------------------------------------------------------------
# digits
# -------------------------------------------------------------------------------------------------


def _resize_float(image, size, resample):
    """Resize one 2-d float image with Pillow's float ("F") mode, which keeps full precision."""
    from PIL import Image

    height, width = size
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


@validate_params(
    {
        "image_size": [Interval(Integral, 1, None, closed="left")],
        "n_class": [Interval(Integral, 1, 10, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def load_digits_images(image_size=16, *, n_class=10):
    """Load scikit-learn's bundled handwritten digits as grayscale images.

    The 1797 digits of :func:`sklearn.datasets.load_digits` are 8x8 images with values 0..16; they
    are scaled to [0, 1] and resized with Pillow's bicubic filter (values clipped to [0, 1]).

    Parameters
    ----------
    image_size : int, default=16
        Side of the returned square images in pixels (8 keeps the original resolution).
    n_class : int, default=10
        Keep only the digits ``0 .. n_class - 1``.

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size, 1), dtype float32
        Images in [0, 1]; ink is bright on a black background.
    y : ndarray of shape (n_samples,), dtype int64
        Digit of each image.

    Examples
    --------
    >>> from skcfx.datasets import load_digits_images
    >>> X, y = load_digits_images(image_size=16)
    >>> X.shape, X.dtype, y[:5].tolist()
    ((1797, 16, 16, 1), dtype('float32'), [0, 1, 2, 3, 4])
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits(n_class=n_class)
    images = digits.images.astype(np.float32) / 16.0
    if image_size != images.shape[1]:
        size = (image_size, image_size)
        images = np.stack([_resize_float(im, size, Image.Resampling.BICUBIC) for im in images])
    X = np.clip(images, 0.0, 1.0)[..., None].astype(np.float32, copy=False)
    return X, digits.target.astype(np.int64)


# -------------------------------------------------------------------------------------------------
# shapes
# -------------------------------------------------------------------------------------------------

SHAPES_ATTRIBUTES = (
    "shape_is_circle",
    "color_is_red",
    "is_large",
    "has_stripes",
    "dark_background",
    "on_left",
    "has_border",
    "has_second_object",
)
"""Names of the binary attributes of :func:`make_shapes`, in the order they are drawn."""

SHAPES_CORRELATED_PAIRS = (("shape_is_circle", "is_large"), ("color_is_red", "has_stripes"))
"""Default ``(source, target)`` pairs that ``make_shapes(correlation=...)`` correlates."""

_RED = np.array([0.85, 0.12, 0.12])
_BLUE = np.array([0.15, 0.30, 0.90])
_GREEN = np.array([0.15, 0.80, 0.25])
_YELLOW = np.array([0.95, 0.85, 0.10])
_STRIPE = np.array([0.97, 0.97, 0.97])
_CHUNK = 1024  # images rendered at once: bounds the temporary arrays to a few MB per array


def _draw_attributes(n_samples, correlation, pairs, rng):
    """Draw the binary attributes; a pair's target copies its source with prob. ``correlation``."""
    attributes = {name: rng.random_sample(n_samples) < 0.5 for name in SHAPES_ATTRIBUTES}
    for source, target in pairs:
        copy = rng.random_sample(n_samples) < correlation
        attributes[target] = np.where(copy, attributes[source], attributes[target])
    return {name: value.astype(np.int8) for name, value in attributes.items()}


def _draw_scene_params(a, rng):
    """Draw the continuous nuisance parameters of every scene, given its attributes ``a``.

    Coordinates are fractions of the image side, so scenes look the same at every resolution.
    """
    n = len(a["on_left"])
    left, large = a["on_left"].astype(bool), a["is_large"].astype(bool)
    p = {
        "cx": np.where(left, 0.27, 0.73) + rng.uniform(-0.03, 0.03, n),
        "cy": 0.5 + rng.uniform(-0.12, 0.12, n),
        "r": np.where(large, rng.uniform(0.16, 0.19, n), rng.uniform(0.10, 0.12, n)),
        "color": np.where(a["color_is_red"][:, None] == 1, _RED, _BLUE)
        + rng.uniform(-0.08, 0.08, (n, 3)),
        "background": np.where(a["dark_background"] == 1, rng.uniform(0.05, 0.2, n),
                               rng.uniform(0.7, 0.85, n))[:, None]
        + rng.uniform(-0.03, 0.03, (n, 3)),
        "stripe_phase": rng.uniform(0.0, 1.0, n),
        # The second object sits in the half the main object leaves free.
        "tx": np.where(left, 0.75, 0.25) + rng.uniform(-0.06, 0.06, n),
        "ty": rng.uniform(0.3, 0.7, n),
        "tcolor": _GREEN + rng.uniform(-0.08, 0.08, (n, 3)),
    }
    return p


def _coverage(signed_distance, size):
    """Anti-aliased coverage in [0, 1] from a signed distance (image-side units, < 0 inside)."""
    return np.clip(0.5 - signed_distance * size, 0.0, 1.0)


def _paint(image, alpha, color):
    """Alpha-composite ``color`` ((n, 3)) over ``image`` ((n, S, S, 3)) in place, in float32."""
    color = np.asarray(color, dtype=np.float32)[:, None, None, :]
    image += alpha.astype(np.float32, copy=False)[..., None] * (color - image)


def _render(a, p, size):
    """Render one chunk of scenes as float32 (n, size, size, 3) images (before noise)."""
    n = len(p["cx"])
    u = ((np.arange(size) + 0.5) / size).astype(np.float32)
    xs, ys = u[None, None, :], u[None, :, None]
    col = {k: v.astype(np.float32)[:, None, None] for k, v in p.items() if np.ndim(v) == 1}
    background = p["background"].astype(np.float32)[:, None, None, :]
    image = np.broadcast_to(background, (n, size, size, 3)).copy()

    dx, dy = xs - col["cx"], ys - col["cy"]
    circle = np.sqrt(dx**2 + dy**2) - col["r"]
    square = np.maximum(np.abs(dx), np.abs(dy)) - col["r"]
    inside = _coverage(np.where(a["shape_is_circle"][:, None, None] == 1, circle, square), size)
    _paint(image, inside, p["color"])

    # Horizontal stripes, about 2.7 periods per object diameter, with 1-pixel soft edges; at
    # least 4 pixels per period: with 3, pixel rows can sample the wave where no row is white.
    period = np.maximum(0.75 * col["r"], 4.0 / size)
    wave = np.sin(2.0 * np.pi * (dy / period + col["stripe_phase"]))
    stripes = np.clip(0.5 + wave * period * size / (2.0 * np.pi), 0.0, 1.0)
    has_stripes = a["has_stripes"].astype(np.float32)[:, None, None]
    _paint(image, inside * stripes * has_stripes, np.broadcast_to(_STRIPE, (n, 3)))

    # An upward triangle of half-width h: the intersection of three half-planes.
    h, tx, ty = 0.075, xs - col["tx"], ys - col["ty"]
    slant = (2.0 * np.abs(tx) - (ty + h)) / np.sqrt(5.0)  # the two sides through the apex
    triangle = np.maximum(slant, ty - h)
    has_second = a["has_second_object"].astype(np.float32)[:, None, None]
    _paint(image, _coverage(triangle, size) * has_second, p["tcolor"])

    # A frame of about 1/16 of the side, drawn last so that objects never hide it.
    width = max(1, round(size / 16)) / size
    frame = np.maximum(np.minimum(xs, ys) < width, np.maximum(xs, ys) > 1.0 - width)
    has_border = a["has_border"].astype(np.float32)[:, None, None]
    _paint(image, frame.astype(np.float32) * has_border, np.broadcast_to(_YELLOW, (n, 3)))
    return image


def _check_pairs(pairs):
    """Validate ``correlated_pairs``: known names, no self-pair, each target at most once."""
    pairs = [tuple(pair) if isinstance(pair, (tuple, list)) else (pair,) for pair in pairs]
    targets = [pair[1] for pair in pairs if len(pair) == 2]
    for pair in pairs:
        if len(pair) != 2 or not set(pair) <= set(SHAPES_ATTRIBUTES) or pair[0] == pair[1]:
            raise ValueError(
                "correlated_pairs must hold (source, target) pairs of two different names from "
                f"SHAPES_ATTRIBUTES {SHAPES_ATTRIBUTES}; got {pair!r}."
            )
    if len(set(targets)) != len(targets):
        raise ValueError(f"correlated_pairs names a target twice: {targets}.")
    return pairs


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "image_size": [Interval(Integral, 8, None, closed="left")],
        "random_state": ["random_state"],
        "correlation": [Interval(Real, 0, 1, closed="both")],
        "correlated_pairs": ["array-like"],
        "noise": [Interval(Real, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def make_shapes(
    n_samples,
    image_size=32,
    random_state=None,
    *,
    correlation=0.0,
    correlated_pairs=SHAPES_CORRELATED_PAIRS,
    noise=0.02,
):
    """Generate RGB scenes of simple shapes with known binary attributes.

    Each scene has a background, one main object (circle or square, red or blue, large or small,
    plain or striped, in the left or the right half), optionally a small green triangle in the
    other half and optionally a yellow frame. The eight attributes in :data:`SHAPES_ATTRIBUTES`
    are each drawn with probability 1/2; everything else (exact position, size, colour shade,
    background shade, stripe phase) varies as nuisance. Scenes are rendered with numpy as
    anti-aliased signed-distance shapes, about 0.2 ms per 32-pixel image (10,000 images in about
    2 s on two shared CPU cores), much faster than drawing with Pillow image by image.

    Parameters
    ----------
    n_samples : int
        Number of images.
    image_size : int, default=32
        Side of the square images in pixels, at least 8. Every attribute is clearly visible from
        32 pixels up; at 16 pixels small stripes blur.
    random_state : int, RandomState instance or None, default=None
        Seed; the same seed gives identical images and attributes.
    correlation : float in [0, 1], default=0.0
        Strength of the spurious correlations: for every ``(source, target)`` pair of
        ``correlated_pairs``, the target attribute copies the source attribute with this
        probability (and keeps its own independent draw otherwise), so their Pearson correlation
        is ``correlation`` in expectation while both stay balanced.
    correlated_pairs : sequence of (str, str), default=SHAPES_CORRELATED_PAIRS
        Pairs to correlate, applied in order; by default ``is_large`` follows
        ``shape_is_circle`` and ``has_stripes`` follows ``color_is_red``. Pass ``()`` for none.
    noise : float, default=0.02
        Standard deviation of Gaussian pixel noise (values are clipped to [0, 1]).

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size, 3), dtype float32
        Images in [0, 1].
    attributes : dict of str to ndarray of shape (n_samples,), dtype int8
        Every attribute of :data:`SHAPES_ATTRIBUTES`, 1 when the scene has it:

        - ``shape_is_circle``: circle (1) or square (0) main object;
        - ``color_is_red``: red (1) or blue (0) main object;
        - ``is_large``: radius 0.16-0.19 (1) or 0.10-0.12 (0) of the side;
        - ``has_stripes``: light horizontal stripes across the main object;
        - ``dark_background``: dark (1) or light (0) grey background;
        - ``on_left``: main object in the left (1) or right (0) half;
        - ``has_border``: yellow frame around the image;
        - ``has_second_object``: small green triangle in the other half.

    See Also
    --------
    make_or_class : Build the two-mode classification task used to evaluate DifCluE.

    Examples
    --------
    >>> from skcfx.datasets import make_shapes
    >>> X, attributes = make_shapes(100, random_state=0, correlation=0.9)
    >>> X.shape, X.dtype, sorted(attributes)[:2]
    ((100, 32, 32, 3), dtype('float32'), ['color_is_red', 'dark_background'])
    """
    pairs = _check_pairs(correlated_pairs)
    rng = check_random_state(random_state)
    # numpy's Generator draws float32 noise directly, several times faster than RandomState.
    noise_rng = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
    attributes = _draw_attributes(n_samples, correlation, pairs, rng)
    params = _draw_scene_params(attributes, rng)
    X = np.empty((n_samples, image_size, image_size, 3), dtype=np.float32)
    for start in range(0, n_samples, _CHUNK):
        part = slice(start, start + _CHUNK)
        chunk = _render({k: v[part] for k, v in attributes.items()},
                        {k: v[part] for k, v in params.items()}, image_size)
        if noise > 0:
            chunk += np.float32(noise) * noise_rng.standard_normal(chunk.shape, dtype=np.float32)
        np.clip(chunk, 0.0, 1.0, out=X[part])
    return X, attributes


def make_or_class(attributes, a, b):
    """Build a binary task whose positive class is the union of two attributes (``a OR b``).

    DISSECT (Ghandeharioun et al., 2022) and DifCluE evaluate multi-mode explanations this way:
    the positive class mixes two concepts, so a faithful explainer should find two modes, and the
    counterfactual towards mode ``k`` of a negative should show concept ``k`` (percent
    conversion). ``subclass`` gives the ground truth for mode recovery (adjusted Rand index
    between modes and sub-classes). Scenes with both attributes (``subclass == 3``) are
    ambiguous; drop them to get two clean modes.

    Parameters
    ----------
    attributes : dict of str to array-like of shape (n_samples,)
        Binary attributes, e.g. the second output of :func:`make_shapes`.
    a, b : str
        Names of the two attributes that make up the positive class.

    Returns
    -------
    y : ndarray of shape (n_samples,), dtype int64
        1 where ``a`` or ``b`` is present, else 0.
    subclass : ndarray of shape (n_samples,), dtype int64
        0 for neither, 1 for ``a`` only, 2 for ``b`` only, 3 for both.

    Examples
    --------
    >>> from skcfx.datasets import make_or_class
    >>> y, sub = make_or_class({"p": [0, 1, 0, 1], "q": [0, 0, 1, 1]}, "p", "q")
    >>> y.tolist(), sub.tolist()
    ([0, 1, 1, 1], [0, 1, 2, 3])
    """
    for name, arg in ((a, "a"), (b, "b")):
        if name not in attributes:
            raise ValueError(
                f"{arg}={name!r} is not an attribute; choose from {sorted(attributes)}."
            )
    if a == b:
        raise ValueError(f"a and b must be two different attributes, got {a!r} twice.")
    has_a = np.asarray(attributes[a]).astype(bool)
    has_b = np.asarray(attributes[b]).astype(bool)
    if has_a.shape != has_b.shape or has_a.ndim != 1:
        raise ValueError(
            f"attributes {a!r} and {b!r} must be 1-d of one length, got shapes "
            f"{has_a.shape} and {has_b.shape}."
        )
    subclass = has_a.astype(np.int64) + 2 * has_b.astype(np.int64)
    return (has_a | has_b).astype(np.int64), subclass


# -------------------------------------------------------------------------------------------------
# image folders
# -------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"
)
"""File extensions :func:`load_image_folder` reads (compared case-insensitively)."""
_GRAY_MODES = ("1", "L", "LA", "La")
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit files open in these modes


def _crop_box(width, height, size):
    """Centred box of the source image with the aspect ratio of ``size`` = (H, W)."""
    target = size[1] / size[0]
    if width / height > target:
        new_width = height * target
        left = (width - new_width) / 2
        return (left, 0.0, left + new_width, float(height))
    new_height = width / target
    top = (height - new_height) / 2
    return (0.0, top, float(width), top + new_height)


def _load_resized(path, size, center_crop):
    """Read one image and resize it to ``size``.

    Returns the image as (H, W, C) -- ``uint8`` for 8-bit files, float32 in [0, 1] for 16-bit and
    float files, which would lose precision in 8 bits -- and whether it is gray.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
        box = _crop_box(*image.size, size) if center_crop else None
        resample, target = Image.Resampling.BICUBIC, (size[1], size[0])
        if image.mode in _WIDE_MODES or image.mode == "F":
            scale = 1.0 if image.mode == "F" else 65535.0
            plane = np.asarray(image, dtype=np.float32) / scale
            out = np.asarray(Image.fromarray(plane).resize(target, resample, box=box))
            return np.clip(out, 0.0, 1.0)[..., None], True
        gray = image.mode in _GRAY_MODES
        image = image.convert("L" if gray else "RGB").resize(target, resample, box=box)
    array = np.asarray(image, dtype=np.uint8)
    return (array[..., None] if gray else array), gray


def _is_gray_file(path):
    """Whether a file decodes to one channel, from its header only (nothing decoded)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.mode in _GRAY_MODES or image.mode in _WIDE_MODES or image.mode == "F"


def _list_class_files(root):
    """Sorted class folders and, for each, its sorted image files."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(
            f"path '{root}' has no class subfolders; expected images in path/<class>/<image>."
        )
    files = {}
    for name in classes:
        found = sorted(
            f for f in (root / name).iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not found:
            raise ValueError(
                f"class folder '{root / name}' holds no image files (extensions "
                f"{', '.join(IMAGE_EXTENSIONS)})."
            )
        files[name] = found
    return classes, files


def _to_channels(image, n_channels, dtype=np.float32):
    """One loaded image as ``n_channels`` of ``dtype`` (ITU-R 601 luma for RGB -> gray, as Pillow's "L").

    float32 comes out in [0, 1] whatever :func:`_load_resized` gave (the CLI relies on that).
    """
    if image.shape[-1] == n_channels and image.dtype == dtype:
        return image
    if image.dtype == dtype == np.uint8 and image.shape[-1] == 1 and n_channels == 3:
        return np.repeat(image, 3, axis=-1)
    x = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    if x.shape[-1] != n_channels:
        x = np.repeat(x, 3, axis=-1) if n_channels == 3 else (x @ _LUMA)[..., None]
    if dtype == np.uint8:
        return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_image_folder(path, image_size, *, grayscale=None, center_crop=True, dtype="uint8"):
    """Load images stored as ``path/<class>/<image>``, one folder per class.

    The images are resized and written one by one into a single preallocated array (no list of
    images, no stacking, no float copy), so memory holds the result once: for 70,000 RGB images
    of 128x128 that is 3.4 GB as ``uint8`` (13.8 GB as float32). To train on collections that do
    not fit in memory, pass the folder itself to :meth:`skcfx.DiffAEEncoder.fit`, which decodes
    it a batch at a time.

    Parameters
    ----------
    path : str or os.PathLike
        Root folder. Its subfolders (sorted by name; hidden ones skipped) are the classes; files
        with the extensions in ``IMAGE_EXTENSIONS`` inside them are the images (other files are
        ignored).
    image_size : int or (int, int)
        Output size, square side or ``(H, W)``. Images are resized with Pillow's bicubic filter.
    grayscale : bool or None, default=None
        True converts everything to one channel (luma), False to RGB; None gives one channel
        only if every image is grayscale (decided from the file headers). Alpha channels are
        dropped.
    center_crop : bool, default=True
        Crop the largest centred region with the target aspect ratio before resizing, so that
        images are not distorted. If False, images are stretched.
    dtype : {'uint8', 'float32'}, default='uint8'
        ``uint8`` in 0..255 (what every skcfx estimator accepts, a quarter of the memory) or
        ``float32`` in [0, 1]. 16-bit and float files keep their precision only as float32.

    Returns
    -------
    X : ndarray of shape (n_samples, H, W, C), dtype uint8 or float32
        Images; C is 1 or 3.
    y : ndarray of shape (n_samples,), dtype int64
        Index of each image's class in ``class_names``.
    class_names : list of str
        Class folder names, sorted.

    Raises
    ------
    ValueError
        If ``path`` is not a folder, has no class subfolders, a class folder has no images, or a
        file cannot be read as an image (the message names the file).
    """
    size = check_image_size(image_size)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}.")
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"path '{root}' is not an existing folder.")
    if grayscale not in (None, True, False):
        raise TypeError(f"grayscale must be None, True or False, got {grayscale!r}.")
    if dtype not in ("uint8", "float32", np.uint8, np.float32):
        raise ValueError(f"dtype must be 'uint8' or 'float32', got {dtype!r}.")
    dtype = np.dtype(dtype)
    class_names, files = _list_class_files(root)
    listed = [(label, file) for label, name in enumerate(class_names) for file in files[name]]
    if grayscale is None:
        grayscale = all(_read_or_raise(_is_gray_file, file) for _, file in listed)
    n_channels = 1 if grayscale else 3
    X = np.empty((len(listed), *size, n_channels), dtype=dtype)
    for i, (_, file) in enumerate(listed):
        image, _ = _read_or_raise(lambda f: _load_resized(f, size, center_crop), file)
        X[i] = _to_channels(image, n_channels, dtype)
    return X, np.asarray([label for label, _ in listed], dtype=np.int64), class_names


def _read_or_raise(read, file):
    """``read(file)``; an unreadable file raises ValueError naming it."""
    try:
        return read(file)
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read '{file}' as an image: {exc}") from exc


# -------------------------------------------------------------------------------------------------
# Fashion-MNIST
# -------------------------------------------------------------------------------------------------

FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
"""The ten official class names of Fashion-MNIST, in label order (Xiao et al., 2017)."""
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes


def _find_idx_file(root, stem):
    """``root/stem.gz`` or ``root/stem`` (also ``stem.idx3-ubyte``-style dots), else None."""
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def _read_idx(file, n_dims):
    """Read an IDX file of unsigned bytes with ``n_dims`` dimensions (gzip-compressed or not).

    The format (LeCun et al., MNIST page): two zero bytes, the type code (0x08 for unsigned
    bytes), the number of dimensions, then one big-endian int32 per dimension, then the data.
    """
    with open(file, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    try:
        with opener(file, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read '{file}' as an IDX file: {exc}") from exc
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != _IDX_UBYTE or data[3] != n_dims:
        raise ValueError(
            f"'{file}' is not an IDX file of unsigned bytes with {n_dims} dimension(s) "
            f"(bad magic number {data[:4].hex() or 'empty'}; expected 000008{n_dims:02x})."
        )
    header = 4 + 4 * n_dims
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">i4"))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"'{file}' is truncated or too long: its header announces shape {shape} "
                         f"({int(np.prod(shape))} bytes) but it holds {len(data) - header}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _missing_fashion_message(root, missing):
    return (
        f"Fashion-MNIST files not found in '{root}': missing {', '.join(missing)} (with or without .gz). "
        f"Install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; they go to "
        f"{FASHION_MNIST_PATH}), or download the four IDX files from "
        "https://github.com/zalandoresearch/fashion-mnist and pass their folder as path."
    )


@validate_params(
    {
        "path": [str, os.PathLike, None],
        "subset": [StrOptions({"train", "test"})],
        "image_size": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def load_fashion_mnist(path=None, *, subset="train", image_size=28):
    """Load Fashion-MNIST (Xiao et al., 2017) from its IDX files.

    Reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (``subset='train'``, 60,000
    images) or ``t10k-*`` (``'test'``, 10,000 images), gzip-compressed (``.gz``) or not, as
    distributed by Zalando Research and installed by the Debian package
    ``dataset-fashion-mnist``. Nothing is downloaded.

    Parameters
    ----------
    path : str, os.PathLike or None, default=None
        Folder holding the IDX files. None reads ``FASHION_MNIST_PATH``
        (``/usr/share/datasets/fashion-mnist``, where the Debian package installs them).
    subset : {'train', 'test'}, default='train'
        Which split to read.
    image_size : int, default=28
        Side of the returned images. Other sizes than 28 are resized with Pillow's bicubic
        filter, still in ``uint8``.

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size, 1), dtype uint8
        Grayscale images in 0..255 (white garment on black, as stored).
    y : ndarray of shape (n_samples,), dtype int64
        Class labels 0..9.
    class_names : list of str
        ``FASHION_MNIST_CLASSES``: ``class_names[y[i]]`` names image ``i``'s class.

    Raises
    ------
    FileNotFoundError
        If the files are missing; the message says how to get them.
    ValueError
        If a file is not an IDX file of unsigned bytes (bad magic number), is truncated, or if
        the images and labels do not match.

    Examples
    --------
    >>> from skcfx.datasets import load_fashion_mnist
    >>> X, y, names = load_fashion_mnist(subset="test")  # doctest: +SKIP
    >>> X.shape, X.dtype, names[y[0]]  # doctest: +SKIP
    ((10000, 28, 28, 1), dtype('uint8'), 'Ankle boot')
    """
    root = Path(FASHION_MNIST_PATH if path is None else path)
    stems = _FASHION_FILES[subset]
    files = [_find_idx_file(root, stem) for stem in stems]
    missing = [stem for stem, file in zip(stems, files) if file is None]
    if missing:
        raise FileNotFoundError(_missing_fashion_message(root, missing))
    images, labels = _read_idx(files[0], 3), _read_idx(files[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"'{files[0]}' holds {images.shape[0]} images but '{files[1]}' holds "
                         f"{labels.shape[0]} labels.")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"'{files[1]}' holds label {int(labels.max())}; Fashion-MNIST labels are 0..9.")
    if image_size != images.shape[1] or image_size != images.shape[2]:
        from PIL import Image

        images = np.stack([
            np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.Resampling.BICUBIC))
            for im in images
        ]) if len(images) else np.empty((0, image_size, image_size), dtype=np.uint8)
    return (np.ascontiguousarray(images, dtype=np.uint8)[..., None], labels.astype(np.int64),
            list(FASHION_MNIST_CLASSES))
