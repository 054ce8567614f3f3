"""Small SVG charts for the HTML report (no plotting library): the importance curves and the
2-D map of the latents."""

from __future__ import annotations

import html

import numpy as np

__all__ = ["line_chart", "scatter_map"]

_W, _H = 560, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 16, 44


def _scale(values, lo, hi, out_lo, out_hi):
    span = hi - lo if hi > lo else 1.0
    return out_lo + (np.asarray(values, dtype=np.float64) - lo) / span * (out_hi - out_lo)


def _axes(x_ticks, y_ticks, x_range, y_range, xlabel, ylabel):
    """Frame, ticks and labels; returns the SVG elements and the two scaling functions."""
    def sx(v):
        return _scale(v, *x_range, _LEFT, _W - _RIGHT)

    def sy(v):
        return _scale(v, *y_range, _H - _BOTTOM, _TOP)

    parts = [f'<rect x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{_H - _TOP - _BOTTOM}" '
             'fill="none" stroke="#888"/>']
    for v in x_ticks:
        x = float(sx(v))
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" stroke="#888"/>'
                     f'<text x="{x:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">{v:g}</text>')
    for v in y_ticks:
        y = float(sy(v))
        parts.append(f'<line x1="{_LEFT - 4}" x2="{_LEFT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888"/>'
                     f'<text x="{_LEFT - 7}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    parts.append(f'<text x="{(_LEFT + _W - _RIGHT) / 2:.0f}" y="{_H - 8}" text-anchor="middle">'
                 f'{html.escape(xlabel)}</text>')
    parts.append(f'<text transform="translate(14 {(_TOP + _H - _BOTTOM) / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(ylabel)}</text>')
    return parts, sx, sy


def _polyline(xs, ys, color, width, opacity=1.0, dash=None):
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys) if np.isfinite(y))
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="{width}" '
            f'stroke-opacity="{opacity}"{extra}/>')


def _svg(parts, title):
    return (f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
            f'font-family="sans-serif" font-size="11"><title>{html.escape(title)}</title>{"".join(parts)}</svg>')


def line_chart(x, series, *, xlabel, ylabel, title, reference_lines=(), rugs=()):
    """Probability curves: per series thin lines per query and a bold mean.

    Parameters
    ----------
    x : ndarray of shape (n_steps,)
    series : list of (color, ndarray of shape (n_queries, n_steps))
    reference_lines : sequence of (y, label)
        Dashed horizontal lines (e.g. the decision threshold).
    rugs : sequence of (color, ndarray)
        Ticks along the x axis (e.g. the steps the search chose).
    """
    x = np.asarray(x, dtype=np.float64)
    x_range = (float(x.min()), float(x.max()) if x.max() > x.min() else float(x.min()) + 1)
    ticks = np.unique(np.round(np.linspace(*x_range, 5), 2))
    parts, sx, sy = _axes(ticks, (0, 0.25, 0.5, 0.75, 1), x_range, (0.0, 1.0), xlabel, ylabel)
    for y, label in reference_lines:
        parts.append(_polyline(sx(x_range), sy([y, y]), "#555", 1, dash="4 3"))
        parts.append(f'<text x="{_W - _RIGHT - 4}" y="{float(sy(y)) - 4:.1f}" text-anchor="end" fill="#555">'
                     f'{html.escape(label)}</text>')
    for color, curves in series:
        for row in curves:
            parts.append(_polyline(sx(x), sy(row), color, 1, opacity=0.18))
    for color, curves in series:
        if len(curves):
            parts.append(_polyline(sx(x), sy(np.nanmean(curves, axis=0)), color, 3))
    base = _H - _BOTTOM
    for color, values in rugs:
        for v in np.asarray(values, dtype=np.float64):
            if np.isfinite(v) and x_range[0] <= v <= x_range[1]:
                xv = float(sx(v))
                parts.append(f'<line x1="{xv:.1f}" x2="{xv:.1f}" y1="{base - 7}" y2="{base}" stroke="{color}"/>')
    return _svg(parts, title)


def scatter_map(points, colors, *, queries=None, counterfactuals=None, cf_colors=None, title):
    """2-D map: background points coloured by mode; queries (black rings) joined to their
    counterfactuals (coloured triangles) by thin lines.

    Parameters
    ----------
    points : ndarray of shape (n, 2)
    colors : sequence of str, one per point
    queries : ndarray of shape (m, 2), default=None
    counterfactuals : ndarray of shape (m, k, 2), default=None
    cf_colors : nested sequence (m, k) of str or None (slot without a counterfactual)
    """
    every = [np.asarray(points)]
    if queries is not None:
        every += [np.asarray(queries), np.asarray(counterfactuals).reshape(-1, 2)]
    stacked = np.concatenate(every)
    lo, hi = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
    pad = 0.04 * np.where(hi > lo, hi - lo, 1.0)
    parts, sx, sy = _axes((), (), (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]),
                          "first principal component of the standardised latents", "second component")
    px, py = sx(np.asarray(points)[:, 0]), sy(np.asarray(points)[:, 1])
    parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.2" fill="{c}" fill-opacity="0.55"/>'
              for a, b, c in zip(px, py, colors)]
    if queries is not None:
        qx, qy = sx(np.asarray(queries)[:, 0]), sy(np.asarray(queries)[:, 1])
        cfs = np.asarray(counterfactuals)
        for i in range(len(qx)):
            for j in range(cfs.shape[1]):
                if cf_colors[i][j] is None:
                    continue
                cx, cy = float(sx(cfs[i, j, 0])), float(sy(cfs[i, j, 1]))
                parts.append(f'<line x1="{qx[i]:.1f}" y1="{qy[i]:.1f}" x2="{cx:.1f}" y2="{cy:.1f}" '
                             f'stroke="{cf_colors[i][j]}" stroke-opacity="0.6"/>')
                parts.append(f'<path d="M{cx:.1f},{cy - 4.5:.1f} l4,7 h-8 z" fill="{cf_colors[i][j]}" '
                             'stroke="black" stroke-width="0.6"/>')
            parts.append(f'<circle cx="{qx[i]:.1f}" cy="{qy[i]:.1f}" r="3.5" fill="white" stroke="black"/>')
    return _svg(parts, title)
