"""HTML pieces of the report: page frame, query cards, thumbnails, tables (no templates engine)."""

from __future__ import annotations

import html

import numpy as np

from ._render import colorbar_uri, diff_uri, image_uri, mode_color

__all__ = ["page", "query_card", "thumbnails", "metrics_table", "legend", "fmt"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.lead{color:#444;max-width:900px}
img.px{image-rendering:pixelated;image-rendering:crisp-edges;border:1px solid #ccc;background:#fff}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:.8em 0;background:#fafafa}
.card h3{margin:0 0 .4em 0;font-size:1em}
.row{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
figure{margin:0;text-align:center;font-size:.82em;max-width:260px}
figure .pair{display:flex;gap:4px;justify-content:center;align-items:flex-start}
figcaption{margin-top:.25em}
.mode{font-weight:600;display:inline-block;padding:0 .35em;border-left:5px solid #999}
ul.modes li{margin:.2em 0} ul.modes .mode{font-weight:normal}
.ok{color:#1a7f37;font-weight:600} .no{color:#b42318;font-weight:600}
.cbar{display:flex;gap:3px;align-items:stretch;font-size:.75em;color:#444}
.cbar .labels{display:flex;flex-direction:column;justify-content:space-between}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}
.thumbs a{text-decoration:none;color:#333;font-size:.7em;text-align:center}
table.metrics{border-collapse:collapse} table.metrics td,table.metrics th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top} table.metrics td.v{font-variant-numeric:tabular-nums;white-space:nowrap}
.legend{display:flex;flex-wrap:wrap;gap:.4em 1.2em;font-size:.85em}
.legend span.sw{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.3em;vertical-align:middle}
nav{margin:1em 0} nav a{margin-right:.8em}
.note{color:#666;font-size:.85em}
"""


def fmt(value):
    """A number for people: 2 decimals for 0.1-1 (rates, probabilities), 3 significant digits
    above 1, 2 below 0.1; integers as integers; dicts as 'k: v' lists."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not np.isfinite(value):
            return "n/a"
        if abs(value) >= 1000 or (value == int(value) and abs(value) >= 10):
            return f"{value:,.0f}"
        if 0.1 <= abs(value) <= 1 or value == 0:  # rates and probabilities: two decimals
            return f"{value:.2f}"
        if abs(value) > 1:
            return f"{value:.3g}"
        return f"{value:.2g}"
    return str(value)


def page(title, body):
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n')


def _img(uri, size, alt):
    return f'<img class="px" src="{uri}" width="{size}" height="{size}" alt="{html.escape(alt)}">'


def colorbar(limit, size):
    """The colour bar of the difference maps, labelled with the report's scale."""
    return (f'<div class="cbar" title="difference map scale"><img src="{colorbar_uri()}" width="10" '
            f'height="{size}" alt="colour bar" style="border:1px solid #ccc">'
            f'<div class="labels"><span>+{limit:.2f} brighter</span><span>0</span>'
            f'<span>&minus;{limit:.2f} darker</span></div></div>')


def query_card(e, i, *, class_names, slot_names, limit, size):
    """One query: the original, then per slot the counterfactual, its difference map and verdict."""
    pred = int(np.argmax(e.original_proba[i]))
    parts = [f'<div class="card" id="q{i}"><h3>Query {i}: the classifier says '
             f'<b>{html.escape(class_names[pred])}</b> (p = {e.original_proba[i, pred]:.2f})</h3><div class="row">',
             f'<figure>{_img(image_uri(e.images[i]), size, f"query {i}")}<figcaption>original</figcaption></figure>']
    for j in range(e.n_counterfactuals):
        target = int(e.cf_target_class[i, j])
        if target < 0:
            continue
        mode = int(e.mode_ids[i, j])
        name = slot_names.get(mode, f"sample {j + 1}") if mode >= 0 else f"sample {j + 1}"
        p = e.cf_proba[i, j, target]
        verdict = ('<span class="ok">flipped</span>' if e.success[i, j] else '<span class="no">not flipped</span>')
        step = f"<br>step {e.alphas[i, j]:.2f} along the mode" if np.isfinite(e.alphas[i, j]) else ""
        parts.append(
            f'<figure><div class="pair">{_img(image_uri(e.counterfactuals[i, j]), size, f"counterfactual {name}")}'
            f'{_img(diff_uri(e.images[i], e.counterfactuals[i, j], limit), size, "difference map")}</div>'
            f'<figcaption><span class="mode" style="border-color:{mode_color(mode)}">{html.escape(name)}</span><br>'
            f'towards {html.escape(class_names[target])}: p = {p:.2f} {verdict}{step}<br>'
            f'<span class="note">counterfactual | change</span></figcaption></figure>')
    parts.append(colorbar(limit, size) + "</div></div>")
    return "".join(parts)


def thumbnails(e, page_of_query, page_files):
    """Every query as a small picture linking to its card, with how many slots flipped."""
    items = []
    for i in range(e.n_queries):
        valid = e.cf_target_class[i] >= 0
        flipped = int(e.success[i][valid].sum())
        href = f"{page_files[page_of_query[i]]}#q{i}"
        items.append(f'<a href="{href}">{_img(image_uri(e.images[i]), 40, f"query {i}")}<br>'
                     f'{i}: {flipped}/{int(valid.sum())}</a>')
    return f'<div class="thumbs">{"".join(items)}</div>'


def metrics_table(rows):
    """Rows of (name, value, meaning)."""
    body = "".join(f"<tr><td>{html.escape(name)}</td><td class=\"v\">{html.escape(fmt(value))}</td>"
                   f"<td>{html.escape(meaning)}</td></tr>" for name, value, meaning in rows)
    return f'<table class="metrics"><tr><th>metric</th><th>value</th><th>what it means</th></tr>{body}</table>'


def legend(entries):
    """Colour swatches with names: (color, name) pairs."""
    return '<div class="legend">' + "".join(
        f'<span><span class="sw" style="background:{c}"></span>{html.escape(n)}</span>' for c, n in entries) + "</div>"
