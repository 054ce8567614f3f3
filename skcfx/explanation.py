"""CounterfactualExplanation: the result of :meth:`CounterfactualExplainer.explain`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ._validation import check_positive_int

__all__ = ["CounterfactualExplanation"]

_FORMAT = "skcfx-explanation"
# Array fields, in the order they are saved.
_ARRAY_FIELDS = (
    "images",
    "counterfactuals",
    "success",
    "original_proba",
    "cf_proba",
    "target_class",
    "cf_target_class",
    "alphas",
    "mode_ids",
    "classes",
)


@dataclass
class CounterfactualExplanation:
    """Counterfactuals for a batch of queries, with the classifier's verdict on each.

    ``n`` queries, ``k`` counterfactuals per query (one per mode for DifCluE, one per sample for
    DiME / FastDiME), ``n_classes`` classes of the explained classifier.

    Attributes
    ----------
    images : ndarray of shape (n, H, W, C), float32 in [0, 1]
        The queries.
    counterfactuals : ndarray of shape (n, k, H, W, C), float32 in [0, 1]
        The counterfactual images. Slots that do not apply to a query (a multi-class query's own
        class when ``target_class=None``) hold the query itself and ``success=False``.
    success : ndarray of shape (n, k), bool
        Whether the classifier predicts the slot's target class on the counterfactual.
    original_proba : ndarray of shape (n, n_classes)
        Classifier probabilities on the queries.
    cf_proba : ndarray of shape (n, k, n_classes)
        Classifier probabilities on the counterfactuals.
    target_class : ndarray of shape (n,)
        The target class of each query (for a multi-class query explained towards every other class,
        the most probable other class; ``cf_target_class`` gives each slot's own target).
    cf_target_class : ndarray of shape (n, k)
        The target class of every counterfactual slot.
    alphas : ndarray of shape (n, k), float
        DifCluE: step taken along each mode's direction (in standardised latent units scaled by
        ``sqrt(latent_dim)``, as in the published attribute editing); NaN for DiME / FastDiME.
    mode_ids : ndarray of shape (n, k), int
        DifCluE: the global mode (direction) index of each slot (-1 where none); DiME: -1.
    classes : ndarray of shape (n_classes,)
        The class labels, in the column order of the probability arrays.
    n_function_evals : float
        Denoiser network evaluations spent per counterfactual, on average (inversion included).
    wall_time_s : float
        Seconds spent in ``explain``.
    method : str
        ``'difclue'``, ``'dime'`` or ``'fastdime'``.
    info : dict
        JSON-serialisable details of the run (settings, per-stage counts).
    """

    images: np.ndarray
    counterfactuals: np.ndarray
    success: np.ndarray
    original_proba: np.ndarray
    cf_proba: np.ndarray
    target_class: np.ndarray
    cf_target_class: np.ndarray
    alphas: np.ndarray
    mode_ids: np.ndarray
    classes: np.ndarray
    n_function_evals: float
    wall_time_s: float
    method: str = "difclue"
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ shape helpers
    @property
    def n_queries(self):
        """Number of queries ``n``."""
        return self.images.shape[0]

    @property
    def n_counterfactuals(self):
        """Counterfactuals per query ``k``."""
        return self.counterfactuals.shape[1]

    @property
    def flip_rate(self):
        """Share of counterfactual slots (that have a target) which reach their target class."""
        valid = self.cf_target_class >= 0
        return float(self.success[valid].mean()) if valid.any() else float("nan")

    def __repr__(self):
        h, w, c = self.images.shape[1:]
        return (
            f"CounterfactualExplanation(method={self.method!r}, n_queries={self.n_queries}, "
            f"k={self.n_counterfactuals}, image={h}x{w}x{c}, flip_rate={self.flip_rate:.3f}, "
            f"n_function_evals={self.n_function_evals:.1f}, wall_time_s={self.wall_time_s:.2f})"
        )

    # ------------------------------------------------------------------ tabular view
    def to_frame(self):
        """One row per (query, counterfactual slot).

        Returns
        -------
        frame : pandas.DataFrame or dict of ndarray
            A DataFrame when pandas is installed, else a dict of equal-length 1-D columns
            (``pandas.DataFrame(frame)`` turns it into one). Columns: ``query``, ``slot``,
            ``mode_id``, ``original_class``, ``target_class``, ``alpha``, ``success``,
            ``p_target_original``, ``p_target_cf``, ``l1``, ``l2``.
        """
        n, k = self.success.shape
        query = np.repeat(np.arange(n), k)
        slot = np.tile(np.arange(k), n)
        target = self.cf_target_class.reshape(-1)
        target_col = np.clip(target, 0, None)
        orig_pred = np.argmax(self.original_proba, axis=1)
        p_orig = self.original_proba[query, target_col]
        p_cf = self.cf_proba.reshape(n * k, -1)[np.arange(n * k), target_col]
        diff = self.counterfactuals - self.images[:, None]
        columns = {
            "query": query,
            "slot": slot,
            "mode_id": self.mode_ids.reshape(-1),
            "original_class": self.classes[orig_pred][query],
            "target_class": np.where(target >= 0, self.classes[target_col], None)
            if target.min() < 0
            else self.classes[target_col],
            "alpha": self.alphas.reshape(-1),
            "success": self.success.reshape(-1),
            "p_target_original": np.where(target >= 0, p_orig, np.nan),
            "p_target_cf": np.where(target >= 0, p_cf, np.nan),
            "l1": np.abs(diff).reshape(n * k, -1).mean(axis=1),
            "l2": np.sqrt((diff**2).reshape(n * k, -1).mean(axis=1)),
        }
        try:
            import pandas as pd
        except ImportError:
            return columns
        return pd.DataFrame(columns)

    # ------------------------------------------------------------------ plotting
    def plot(self, indices=None, *, max_queries=8, show_diff=True, class_names=None, figsize=None):
        """Draw original | one column per counterfactual | (optionally) difference maps.

        Parameters
        ----------
        indices : sequence of int, default=None
            Queries to draw; default the first ``max_queries``.
        max_queries : int, default=8
            Upper bound on rows when ``indices`` is None.
        show_diff : bool, default=True
            Add one difference map (counterfactual minus original, mean over channels; red =
            brighter, blue = darker) per counterfactual.
        class_names : sequence of str, default=None
            Names to print instead of class labels.
        figsize : tuple, default=None
            Matplotlib figure size.

        Returns
        -------
        matplotlib.figure.Figure
        """
        try:
            import matplotlib

            matplotlib.use(matplotlib.get_backend())
            from matplotlib.figure import Figure
        except ImportError as exc:  # pragma: no cover - matplotlib is an extra
            raise ImportError("plot() needs matplotlib: pip install 'skcfx[plot]'.") from exc
        check_positive_int(max_queries, "max_queries")
        if indices is None:
            indices = np.arange(min(self.n_queries, max_queries))
        indices = np.asarray(indices)
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be integer query indices, got dtype {indices.dtype}.")
        if indices.ndim != 1 or indices.size == 0:
            raise ValueError("indices must be a non-empty 1-D sequence of query indices.")
        if indices.min() < -self.n_queries or indices.max() >= self.n_queries:
            raise ValueError(f"indices must lie in [0, {self.n_queries}), got {indices.tolist()}.")
        names = self._class_names(class_names)
        k = self.n_counterfactuals
        n_cols = 1 + k * (2 if show_diff else 1)
        rows = len(indices)
        fig = Figure(figsize=figsize or (1.6 * n_cols, 1.8 * rows), constrained_layout=True)
        axes = np.atleast_2d(fig.subplots(rows, n_cols, squeeze=False))
        for r, i in enumerate(indices):
            pred = int(np.argmax(self.original_proba[i]))
            self._show(axes[r, 0], self.images[i], f"query {i}\n{names[pred]} "
                       f"({self.original_proba[i, pred]:.2f})")
            for j in range(k):
                target = int(self.cf_target_class[i, j])
                if target < 0:
                    title = "n/a"
                else:
                    mark = "ok" if self.success[i, j] else "no flip"
                    title = f"{self._slot_name(i, j)}->{names[target]}\np={self.cf_proba[i, j, target]:.2f} {mark}"
                self._show(axes[r, 1 + j], self.counterfactuals[i, j], title)
                if show_diff:
                    delta = (self.counterfactuals[i, j] - self.images[i]).mean(axis=-1)
                    ax = axes[r, 1 + k + j]
                    ax.imshow(delta, cmap="bwr", vmin=-1, vmax=1)
                    ax.set_title("difference", fontsize=7)
                    ax.set_xticks([])
                    ax.set_yticks([])
        return fig

    def _slot_name(self, i, j):
        if self.method == "difclue" and self.mode_ids[i, j] >= 0:
            return f"mode {int(self.mode_ids[i, j])}"
        return f"sample {j}"

    def _class_names(self, class_names):
        if class_names is None:
            return [str(c) for c in self.classes]
        if len(class_names) != len(self.classes):
            raise ValueError(
                f"class_names must have {len(self.classes)} entries, got {len(class_names)}."
            )
        return [str(c) for c in class_names]

    @staticmethod
    def _show(ax, image, title):
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.clip(image, 0, 1))
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])

    # ------------------------------------------------------------------ report
    def to_html(self, path, explainer=None, **kwargs):
        """Write a report a person reads: an HTML page per ``queries_per_page`` queries.

        Shorthand for :func:`skcfx.report.save_report` (see there for ``kwargs``); pass the fitted
        ``explainer`` to add the named modes, the importance curves and the latent map.

        Returns
        -------
        list of pathlib.Path
            The pages written, ``path`` first.
        """
        from .report import save_report

        return save_report(path, self, explainer, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Save to a compressed ``.npz`` file (no pickle inside; safe to load from others).

        Parameters
        ----------
        path : str or path-like
            Destination; written atomically (temporary file, then rename).
        """
        path = Path(path)
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAY_FIELDS}
        if arrays["classes"].dtype == object:
            arrays["classes"] = arrays["classes"].astype(str)
        meta = {
            "format": _FORMAT,
            "n_function_evals": float(self.n_function_evals),
            "wall_time_s": float(self.wall_time_s),
            "method": self.method,
            "info": self.info,
        }
        arrays["__meta__"] = np.array(json.dumps(meta))
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path):
        """Load an explanation written by :meth:`save`."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or path-like, got {type(path).__name__}.")
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path: no such file '{path}'.")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"]))
                arrays = {name: data[name] for name in _ARRAY_FIELDS}
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"path: '{path}' is not a saved CounterfactualExplanation ({exc}).") from exc
        if meta.get("format") != _FORMAT:
            raise ValueError(f"path: '{path}' is not a saved CounterfactualExplanation.")
        return cls(
            **arrays,
            n_function_evals=meta["n_function_evals"],
            wall_time_s=meta["wall_time_s"],
            method=meta["method"],
            info=meta["info"],
        )

    def __eq__(self, other):  # dataclass eq would compare arrays ambiguously
        if not isinstance(other, CounterfactualExplanation):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray):
                if a.shape != np.shape(b) or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                    return False
            elif a != b:
                return False
        return True
