"""Evaluation protocols of the papers, as reusable functions.

The DifCluE / DISSECT *mixed-class* protocol: several known sub-classes (two digits, two
attributes) are merged into one positive class; the modes found in that class should recover the
sub-classes, and the counterfactual made towards mode ``k`` should show sub-class ``k`` according
to an independent oracle ("percent conversion").
"""

from __future__ import annotations

import platform
import sys

import numpy as np

from .metrics import mode_recovery, proximity

__all__ = ["mixed_class_labels", "mode_subclasses", "evaluate_mode_conversion", "machine_info"]


def mixed_class_labels(y, positive):
    """Binary labels: 1 where ``y`` is one of the ``positive`` sub-classes, else 0.

    Parameters
    ----------
    y : array-like of shape (n,)
        Fine labels (e.g. digits).
    positive : sequence
        The sub-classes merged into the positive class.

    Returns
    -------
    ndarray of shape (n,), int64
    """
    y = np.asarray(y)
    positive = list(positive)
    if len(positive) < 1:
        raise ValueError("positive must name at least one sub-class.")
    missing = [p for p in positive if not np.any(y == p)]
    if missing:
        raise ValueError(f"positive sub-classes {missing} do not occur in y.")
    return np.isin(y, positive).astype(np.int64)


def mode_subclasses(direction_finder, fine_labels, class_label=1):
    """Map each mode of ``class_label`` to its majority fine label, and score mode recovery.

    Parameters
    ----------
    direction_finder : fitted ModalDirectionFinder
        Fitted on the same samples, in the same order, as ``fine_labels``.
    fine_labels : array-like of shape (n,)
        The known sub-classes of the training samples.
    class_label : label, default=1
        The class whose modes are mapped.

    Returns
    -------
    mapping : dict
        Global mode (direction) index -> majority fine label.
    recovery : dict
        ``ari`` and ``nmi`` between the modes and the fine labels of that class's samples.
    """
    fine_labels = np.asarray(fine_labels)
    labels = np.asarray(direction_finder.labels_)
    if labels.shape[0] != fine_labels.shape[0]:
        raise ValueError(
            f"fine_labels has {fine_labels.shape[0]} entries but the finder was fitted on {labels.shape[0]} samples."
        )
    modes = np.asarray(direction_finder.modes_for_class(class_label))
    in_class = np.isin(labels, modes)
    mapping = {}
    for m in modes:
        members = fine_labels[labels == m]
        values, counts = np.unique(members, return_counts=True)
        mapping[int(m)] = values[np.argmax(counts)].item()
    return mapping, mode_recovery(labels[in_class], fine_labels[in_class])


def evaluate_mode_conversion(explanation, oracle_predict, mode_to_subclass):
    """Percent conversion, flip rate and proximity of a DifCluE explanation.

    Parameters
    ----------
    explanation : CounterfactualExplanation
    oracle_predict : callable
        Maps images ``(m, H, W, C)`` to fine labels (the independent oracle).
    mode_to_subclass : dict
        Global mode index -> the fine label its counterfactual should show.

    Returns
    -------
    dict
        ``percent_conversion`` (per mode subclass and mean), ``flip_rate``, ``l1``,
        ``n_function_evals``, ``seconds_per_counterfactual``, ``mean_alpha``.
    """
    n, k = explanation.success.shape
    flat = explanation.counterfactuals.reshape((n * k,) + explanation.counterfactuals.shape[2:])
    oracle = np.asarray(oracle_predict(flat)).reshape(n, k)
    valid = explanation.cf_target_class >= 0
    expected = np.vectorize(lambda m: mode_to_subclass.get(int(m), -1))(explanation.mode_ids)
    per_mode, hits = {}, []
    for m, sub in mode_to_subclass.items():
        mask = (explanation.mode_ids == m) & valid
        if mask.any():
            rate = float(np.mean(oracle[mask] == sub))
            per_mode[str(sub)] = rate
            hits.append(rate)
    mask = valid & (expected != -1)
    n_cf = int(valid.sum())
    return {
        "percent_conversion": {"per_mode": per_mode, "mean": float(np.mean(hits)) if hits else float("nan"),
                               "pooled": float(np.mean(oracle[mask] == expected[mask])) if mask.any() else float("nan")},
        "flip_rate": explanation.flip_rate,
        "l1": float(proximity(explanation.images, explanation.counterfactuals)) if n_cf else float("nan"),
        "n_function_evals": float(explanation.n_function_evals),
        "seconds_per_counterfactual": float(explanation.wall_time_s / max(n_cf, 1)),
        "mean_alpha": float(np.nanmean(explanation.alphas)) if np.isfinite(explanation.alphas).any() else float("nan"),
    }


def machine_info():
    """Machine, versions and thread settings, for benchmark JSON files."""
    import os

    import sklearn
    import timm
    import torch

    from . import __version__

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {"skcfx": __version__, "torch": torch.__version__, "timm": timm.__version__,
                     "sklearn": sklearn.__version__, "numpy": np.__version__},
    }
