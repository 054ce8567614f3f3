"""Pictures for the HTML report: images as PNG data URIs, signed difference maps, a colour bar.

Only Pillow is needed (a core dependency): the report must not require matplotlib.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

__all__ = ["image_uri", "diff_uri", "colorbar_uri", "diff_limit", "MODE_COLORS", "mode_color"]

# Ends of the diverging scale: darker (negative) and brighter (positive) than the original.
_NEGATIVE = np.array([33, 102, 172], dtype=np.float64)   # blue
_POSITIVE = np.array([178, 24, 43], dtype=np.float64)    # red
_WHITE = np.array([255, 255, 255], dtype=np.float64)
# A qualitative palette (Tableau 10) for modes, by global mode id.
MODE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def mode_color(mode_id):
    """Colour of a mode id (grey for -1, no mode)."""
    return "#b0b0b0" if mode_id < 0 else MODE_COLORS[int(mode_id) % len(MODE_COLORS)]


def _png_uri(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_uri(image):
    """PNG data URI of one ``(H, W, C)`` float image in [0, 1] (C = 1 or 3), at native size."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return _png_uri(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def diff_limit(images, counterfactuals, valid):
    """One symmetric scale for every difference map of a report: the 99th percentile of
    ``|counterfactual - original|`` (channel mean) over the slots that have a counterfactual."""
    delta = np.abs((counterfactuals - images[:, None]).mean(axis=-1))[valid]
    if delta.size == 0:
        return 1.0
    return float(max(np.percentile(delta, 99), 1e-3))


def _diverging(values, limit):
    t = np.clip(np.asarray(values, dtype=np.float64) / limit, -1.0, 1.0)[..., None]
    end = np.where(t > 0, _POSITIVE, _NEGATIVE)
    return np.rint(_WHITE + (end - _WHITE) * np.abs(t)).astype(np.uint8)


def diff_uri(original, counterfactual, limit):
    """PNG data URI of the signed difference ``counterfactual - original`` (channel mean):
    red where the counterfactual is brighter, blue where darker, white unchanged."""
    delta = (np.asarray(counterfactual) - np.asarray(original)).mean(axis=-1)
    return _png_uri(_diverging(delta, limit))


def colorbar_uri(height=64):
    """A vertical colour bar, +limit at the top, -limit at the bottom, as a PNG data URI."""
    values = np.linspace(1.0, -1.0, height)[:, None].repeat(6, axis=1)
    return _png_uri(_diverging(values, 1.0))
