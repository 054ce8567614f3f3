"""A report a person reads: one self-contained HTML page (plus pages of queries) per explanation.

:func:`save_report` (also :meth:`skcfx.CounterfactualExplanation.to_html`) writes, for every
query, the original, one counterfactual per mode with the classifier's probability of the target
class and a signed difference map with its colour bar; the modes, named after what they hold when
finer labels are known (:meth:`skcfx.ModalDirectionFinder.describe_modes`); the importance curves
(the classifier's probability against the step along each mode's direction,
:meth:`skcfx.CounterfactualExplainer.importance_curve`); a 2-D map of the latents coloured by mode;
and the metrics, rounded, each with one line saying what it means. Pictures are embedded (PNG data
URIs and inline SVG), so the file can be sent as it is; only Pillow is needed.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from .._mode_summary import mode_letter
from .._validation import check_positive_int
from ._html import legend, metrics_table, page, query_card, thumbnails
from ._render import diff_limit, mode_color
from ._svg import line_chart, scatter_map

__all__ = ["save_report", "METRIC_MEANINGS"]

#: One line saying what each metric means (used for the report's metrics table).
METRIC_MEANINGS = {
    "flip_rate": "share of counterfactuals the classifier assigns to their target class (1 = every edit convinces it)",
    "mean_target_proba": "the classifier's mean probability of the target class on the counterfactuals",
    "l1": "mean absolute pixel change, on the 0..1 intensity scale: how much of the image was edited",
    "n_function_evals": "denoiser network evaluations per counterfactual, inversion included: the cost",
    "seconds_per_counterfactual": "wall-clock seconds per counterfactual on this machine",
    "mean_alpha": "mean step taken along the mode directions (standardised latent units times sqrt(latent size))",
    "accepted_rate": "share of counterfactuals whose step passed every check (classifier confidence and, "
                     "re-encoded, nearest to its own mode)",
    "mean_decodes": "decodes tried per counterfactual by the step search",
    "percent_conversion": "share of each mode's counterfactuals that an independent oracle reads as that mode's "
                          "sub-class (per mode, their mean, and pooled)",
    "mode_recovery": "agreement of the modes found with the known sub-classes: adjusted Rand index (ari) and "
                     "normalised mutual information (nmi); 1 = identical, 0 = chance",
    "classifier_test_accuracy": "accuracy of the explained classifier on held-out images",
    "reconstruction_mse_pm1": "the diffusion autoencoder's mean squared reconstruction error in [-1, 1] units "
                              "(held-out images, their own inverted noise)",
    "diffae_training_steps": "optimizer steps the diffusion autoencoder was trained for",
    "diffae_fit_time_s": "seconds its training took (0 or the recorded time when loaded pretrained)",
    "total_time_s": "seconds the whole run took",
    "n_queries": "images explained",
}


# How the metrics table names the metrics it knows (others: the key with spaces).
_METRIC_LABELS = {
    "percent_conversion": "percent conversion", "mode_recovery": "mode recovery",
    "classifier_test_accuracy": "classifier test accuracy", "reconstruction_mse_pm1": "DiffAE reconstruction MSE",
    "diffae_training_steps": "DiffAE training steps", "diffae_fit_time_s": "DiffAE training time (s)",
    "total_time_s": "total time (s)", "n_queries": "queries",
}


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}.")
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"path must name an .html file, got '{path}'.")
    return path


def _class_names(e, class_names):
    if class_names is None:
        return [str(c) for c in e.classes]
    if len(class_names) != len(e.classes):
        raise ValueError(f"class_names must have {len(e.classes)} entries (one per class), got {len(class_names)}.")
    return [str(c) for c in class_names]


def _modes(e, explainer, fine_labels, label_names, class_names):
    """Name of every mode id in the explanation and the summary lines of the finder's modes."""
    finder = getattr(explainer, "direction_finder_", None) if explainer is not None else None
    if finder is None:
        return {int(m): f"mode {mode_letter(int(m))}" for m in np.unique(e.mode_ids) if m >= 0}, []
    summary = finder.describe_modes(fine_labels, label_names, dict(zip(e.classes.tolist(), class_names)))
    return {m["mode"]: m["name"] for m in summary}, summary


def _curve_alphas(e, n_steps=9):
    steps = e.alphas[(e.cf_target_class >= 0) & np.isfinite(e.alphas)]
    top = 1.25 * np.percentile(steps, 95) if steps.size else 4.0
    return np.linspace(0.0, max(0.5, np.ceil(top * 2) / 2), n_steps)


def _importance(e, explainer, n_queries):
    """The explainer's importance curves on the first queries (None without an explainer)."""
    if explainer is None or "alpha" not in explainer.method_.get_params():
        return None
    m = min(n_queries, e.n_queries)
    valid = e.cf_target_class[:m] >= 0
    one_target = all(len(np.unique(row[ok])) <= 1 for row, ok in zip(e.cf_target_class[:m], valid))
    target = e.classes[e.target_class[:m]] if one_target else None
    return explainer.importance_curve(e.images[:m], alphas=_curve_alphas(e), target_class=target)


def _importance_section(e, curve, slot_names, explainer):
    if curve is None:
        return ""
    modes = [int(m) for m in np.unique(curve["mode_ids"]) if m >= 0]
    series = [(mode_color(m), curve["proba"][curve["mode_ids"] == m]) for m in modes]
    rugs = [(mode_color(m), e.alphas[e.mode_ids == m]) for m in modes]
    lines = [(0.5, "decision, p = 0.5")]
    confidence = explainer.method_.get_params().get("target_confidence")
    if confidence is not None and confidence != 0.5:
        lines.append((float(confidence), f"acceptance, p = {confidence:g}"))
    chart = line_chart(curve["alphas"], series, xlabel="step along the mode's direction (alpha)",
                       ylabel="classifier: probability of the target class", title="importance curves",
                       reference_lines=lines, rugs=rugs)
    n = curve["proba"].shape[0]
    return (f"<h2>Importance curves</h2><p class='lead'>How fast walking along each mode's direction convinces the "
            f"classifier: each query of the first {n} decoded at {len(curve['alphas'])} steps (thin lines), their mean "
            f"(bold); ticks on the axis are the steps chosen for the counterfactuals of all {e.n_queries} queries. "
            f"A curve that rises early means the classifier reacts to what that mode changes.</p>"
            + legend([(mode_color(m), slot_names.get(m, f"mode {m}")) for m in modes]) + chart)


def _map_section(e, explainer, X, slot_names, summary, max_queries=30, max_points=2000):
    """PCA of the standardised latents: X's coloured by their nearest mode, queries and their counterfactuals."""
    finder = getattr(explainer, "direction_finder_", None) if explainer is not None else None
    if finder is None:
        return ""
    from sklearn.decomposition import PCA

    encoder, m = explainer.encoder_, min(max_queries, e.n_queries)
    Zq = encoder.transform(e.images[:m])
    Zcf = encoder.transform(e.counterfactuals[:m].reshape((-1,) + e.images.shape[1:]))
    Zb = Zq if X is None else encoder.transform(X)
    if len(Zb) > max_points:
        Zb = Zb[np.sort(np.random.default_rng(0).choice(len(Zb), max_points, replace=False))]

    def standardise(Z):
        return (Z - finder.mean_) / finder.scale_

    pca = PCA(n_components=2, svd_solver="full").fit(standardise(Zb))
    colors = [mode_color(int(k)) for k in finder.predict(Zb)]
    cf_colors = [[mode_color(int(mode)) if target >= 0 else None for mode, target in zip(modes, targets)]
                 for modes, targets in zip(e.mode_ids[:m], e.cf_target_class[:m])]
    chart = scatter_map(pca.transform(standardise(Zb)), colors, queries=pca.transform(standardise(Zq)),
                        counterfactuals=pca.transform(standardise(Zcf)).reshape(m, -1, 2), cf_colors=cf_colors,
                        title="latent map")
    what = "training images" if X is not None else "queries"
    names = [(mode_color(s["mode"]), s["name"]) for s in summary]
    return (f"<h2>Map of the latents</h2><p class='lead'>The semantic latents of {len(Zb)} {what}, standardised and "
            f"projected on their first two principal components, coloured by their nearest mode. Rings: the first "
            f"{m} queries; triangles: their counterfactuals, re-encoded, coloured by the mode they aim at.</p>"
            + legend(names) + chart)


def _metric_rows(e, slot_names, metrics):
    valid = e.cf_target_class >= 0
    column = np.clip(e.cf_target_class, 0, None)[..., None]
    p_target = np.take_along_axis(e.cf_proba, column, axis=2)[..., 0][valid]
    l1 = np.abs(e.counterfactuals - e.images[:, None]).mean(axis=(2, 3, 4))[valid]
    rows = [("queries", e.n_queries, "images explained, all shown below"),
            ("flip rate", e.flip_rate, METRIC_MEANINGS["flip_rate"])]
    for mode in sorted(m for m in np.unique(e.mode_ids[valid]) if m >= 0):
        rows.append((f"flip rate, {slot_names.get(int(mode), mode)}", e.success[valid & (e.mode_ids == mode)].mean(),
                     "the same, for this mode's counterfactuals only"))
    rows += [("mean p(target)", p_target.mean() if p_target.size else np.nan, METRIC_MEANINGS["mean_target_proba"]),
             ("mean L1 change", l1.mean() if l1.size else np.nan, METRIC_MEANINGS["l1"]),
             ("denoiser calls per counterfactual", e.n_function_evals, METRIC_MEANINGS["n_function_evals"]),
             ("seconds per counterfactual", e.wall_time_s / max(int(valid.sum()), 1),
              METRIC_MEANINGS["seconds_per_counterfactual"])]
    if np.isfinite(e.alphas[valid]).any():
        rows.append(("mean step", np.nanmean(e.alphas[valid]), METRIC_MEANINGS["mean_alpha"]))
    for key in ("accepted_rate", "mean_decodes"):
        if isinstance(e.info.get(key), (int, float)):
            rows.append((key.replace("_", " "), e.info[key], METRIC_MEANINGS[key]))
    for key, value in (metrics or {}).items():
        value, meaning = value if isinstance(value, tuple) else (value, METRIC_MEANINGS.get(key, ""))
        rows.append((_METRIC_LABELS.get(key, key.replace("_", " ")), value, meaning))
    return rows


def _intro(e, title, class_names, limit):
    what = ("one counterfactual per mode of the target class (DifCluE)" if e.method == "difclue"
            else f"{e.n_counterfactuals} counterfactual samples per query ({html.escape(e.method)})")
    return (f"<h1>{html.escape(title)}</h1><p class='lead'>{e.n_queries} queries, {what}; classes: "
            f"{html.escape(', '.join(class_names))}. Each card shows the original, then for every counterfactual "
            f"the image the classifier would decide otherwise on, the classifier's probability of the target class, "
            f"and the change: the counterfactual minus the original (mean over channels), red where it is brighter, "
            f"blue where darker, white where nothing changed, on one scale for the whole report "
            f"(&plusmn;{limit:.2f}, the colour bar).</p>")


def _modes_section(summary):
    if not summary:
        return ""
    items = "".join(f"<li><span class='mode' style='border-color:{mode_color(m['mode'])}'>"
                    f"{html.escape(m['summary'])}</span></li>" for m in summary)
    return ("<h2>Modes</h2><p class='lead'>Each class's training latents were clustered into modes; a "
            f"counterfactual walks towards one of them.</p><ul class='modes'>{items}</ul>")


def _nav(page_files, current):
    links = [f"<b>{n + 1}</b>" if n == current else f"<a href='{html.escape(f)}'>{n + 1}</a>"
             for n, f in enumerate(page_files)]
    return f"<nav>Pages of queries: {' '.join(links)}</nav>" if len(page_files) > 1 else ""


def save_report(path, explanation, explainer=None, *, X=None, fine_labels=None, label_names=None,
                class_names=None, metrics=None, title="Counterfactual explanations",
                n_curve_queries=16, queries_per_page=40, image_size=96):
    """Write an HTML report of ``explanation``; returns the paths written (``path`` first).

    Parameters
    ----------
    path : str or path-like
        The main page (``.html``). With more than ``queries_per_page`` queries, the other queries go
        to ``<stem>-queries-2.html``, ... beside it, linked from every page; the main page shows
        every query as a thumbnail.
    explanation : CounterfactualExplanation
    explainer : CounterfactualExplainer, default=None
        The fitted explainer that made ``explanation``. Adds the modes (named with ``fine_labels``),
        the importance curves and the latent map; without it the report shows the queries and metrics.
    X : images, default=None
        Background for the latent map, typically the training images (default: the queries).
    fine_labels, label_names
        Passed to :meth:`ModalDirectionFinder.describe_modes`: a finer label (or dict of
        attributes) per training image given to ``explainer.fit``, and their display names.
    class_names : sequence of str, default=None
        Names of ``explanation.classes``.
    metrics : dict, default=None
        More metrics to show: name -> value, or name -> (value, meaning). Names in
        :data:`METRIC_MEANINGS` get their meaning from there.
    title : str
    n_curve_queries : int, default=16
        Queries the importance curves are computed on (one decode per query, mode and step).
    queries_per_page : int, default=40
    image_size : int, default=96
        Displayed size of every image, in CSS pixels.

    Returns
    -------
    list of pathlib.Path
    """
    from ..explanation import CounterfactualExplanation

    path = _check_path(path)
    if not isinstance(explanation, CounterfactualExplanation):
        raise TypeError(f"explanation must be a CounterfactualExplanation, got {type(explanation).__name__}.")
    for value, name in ((n_curve_queries, "n_curve_queries"), (queries_per_page, "queries_per_page"),
                        (image_size, "image_size")):
        check_positive_int(value, name)
    e, names = explanation, _class_names(explanation, class_names)
    slot_names, summary = _modes(e, explainer, fine_labels, label_names, names)
    limit = diff_limit(e.images, e.counterfactuals, e.cf_target_class >= 0)
    n_pages = max(1, -(-e.n_queries // queries_per_page))
    page_files = [path.name] + [f"{path.stem}-queries-{n + 1}.html" for n in range(1, n_pages)]
    page_of_query = np.arange(e.n_queries) // queries_per_page
    overview = (_intro(e, title, names, limit) + _modes_section(summary)
                + "<h2>Metrics</h2>" + metrics_table(_metric_rows(e, slot_names, metrics))
                + _importance_section(e, _importance(e, explainer, n_curve_queries), slot_names, explainer)
                + _map_section(e, explainer, X, slot_names, summary)
                + f"<h2>All {e.n_queries} queries</h2><p class='note'>Number: flipped counterfactuals / "
                  "counterfactuals. Click a query to see it.</p>" + thumbnails(e, page_of_query, page_files))
    written = []
    for n, file in enumerate(page_files):
        rows = np.flatnonzero(page_of_query == n)
        cards = "".join(query_card(e, int(i), class_names=names, slot_names=slot_names, limit=limit,
                                   size=image_size) for i in rows)
        heading = f"<h2>Queries {rows[0]}-{rows[-1]}</h2>" if rows.size else ""
        body = (overview if n == 0 else f"<h1>{html.escape(title)}</h1><p><a href='{page_files[0]}'>overview</a></p>")
        target = path.with_name(file)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page(title, body + _nav(page_files, n) + heading + cards + _nav(page_files, n)),
                          encoding="utf-8")
        written.append(target)
    return written
