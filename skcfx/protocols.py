"""Evaluation protocols of the papers, as reusable functions.

The DifCluE / DISSECT *mixed-class* protocol: several known sub-classes (two digits, two
attributes) are merged into one positive class; the modes found in that class should recover the
sub-classes, and the counterfactual made towards mode ``k`` should show sub-class ``k`` according
to an independent oracle ("percent conversion").
"""

from __future__ import annotations

import numpy as np

from .metrics import mode_recovery, proximity

__all__ = ["mixed_class_labels", "mode_subclasses", "match_concepts", "evaluate_mode_conversion"]


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


def match_concepts(explanation, oracle_predict, subclasses, *, queries=None):
    """Map unlabelled concepts (e.g. DISSECT's traversals) to sub-classes, one to one.

    A mode of DifCluE is named by the training samples it holds (:func:`mode_subclasses`); a
    concept learnt without clustering has no members, so it is named afterwards by what its
    counterfactuals show: the one-to-one assignment of concepts to ``subclasses`` that maximises
    how many counterfactuals the oracle reads as their concept's sub-class (Hungarian algorithm).

    Parameters
    ----------
    explanation : CounterfactualExplanation
        Its ``mode_ids`` hold the concept index of every slot (``-1`` for empty slots).
    oracle_predict : callable
        Maps images ``(m, H, W, C)`` to fine labels (the independent oracle); labels outside
        ``subclasses`` (e.g. ``-1`` for "none") count for no concept.
    subclasses : sequence
        The sub-classes to name the concepts after.
    queries : array-like of int or bool, optional
        Rows of the explanation to use (e.g. only the queries explained towards the mixed class).

    Returns
    -------
    dict
        Concept index -> sub-class. With fewer sub-classes than concepts, the concepts left over
        are not in the mapping (and so not scored by :func:`evaluate_mode_conversion`).
    """
    from scipy.optimize import linear_sum_assignment

    subclasses = list(subclasses)
    if not subclasses:
        raise ValueError("subclasses must name at least one sub-class.")
    mode_ids = np.asarray(explanation.mode_ids)
    cfs = np.asarray(explanation.counterfactuals)
    if queries is not None:
        mode_ids, cfs = mode_ids[queries], cfs[queries]
    n, k = mode_ids.shape
    if n == 0:
        raise ValueError("no queries to match the concepts on.")
    read = np.asarray(oracle_predict(cfs.reshape((n * k,) + cfs.shape[2:]))).reshape(n, k)
    concepts = np.unique(mode_ids[mode_ids >= 0])
    counts = np.array([[np.sum(read[mode_ids == c] == s) for s in subclasses] for c in concepts])
    rows, cols = linear_sum_assignment(-counts)
    return {int(concepts[r]): (subclasses[c].item() if hasattr(subclasses[c], "item") else subclasses[c])
            for r, c in zip(rows, cols)}


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


# ---------------------------------------------------------------------------------------------------
# attribute oracle (known binary attributes, e.g. skcfx.datasets.make_shapes)
# ---------------------------------------------------------------------------------------------------


def _attribute_matrix(attributes, n_samples):
    """``(names, labels)`` from a dict of 1-d binary arrays or an ``(n, A)`` binary array."""
    if isinstance(attributes, dict):
        names = list(attributes)
        columns = [np.asarray(attributes[name]) for name in names]
        if not columns or any(c.ndim != 1 for c in columns):
            raise ValueError("attributes must map each name to a 1-d array of 0/1 labels.")
        labels = np.stack(columns, axis=1) if len({c.shape[0] for c in columns}) == 1 else None
        if labels is None:
            raise ValueError("attributes must hold arrays of one common length.")
    else:
        labels = np.asarray(attributes)
        if labels.ndim != 2 or labels.shape[1] < 1:
            raise ValueError(f"attributes must be a dict or an (n, n_attributes) array, got shape {labels.shape}.")
        names = list(range(labels.shape[1]))
    if labels.shape[0] != n_samples:
        raise ValueError(f"attributes has {labels.shape[0]} rows but X has {n_samples} images.")
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        raise ValueError("attributes must hold binary labels (0/1 or booleans).")
    return names, labels.astype(np.float32)


def _train_multilabel(module, x, labels, *, max_epochs, batch_size, learning_rate, weight_decay, seed):
    """AdamW on the summed per-attribute binary cross-entropy; ``x`` and ``labels`` on the module's device.

    No input validation. A leftover batch of one image is skipped (BatchNorm needs two).
    """
    import torch
    import torch.nn.functional as F

    from ._images import iter_batches
    from ._validation import make_generator

    optimizer = torch.optim.AdamW(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = make_generator(seed, "cpu")
    module.train()
    for _ in range(max_epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for batch in iter_batches(len(x), batch_size):
            index = order[batch]
            if len(index) < 2:
                continue
            loss = F.binary_cross_entropy_with_logits(module(x[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    module.eval()
    if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
        raise FloatingPointError("the attribute oracle diverged (non-finite weights); lower learning_rate.")


def fit_attribute_oracle(X, attributes, *, model_name="resnet18", max_epochs=5, batch_size=128,
                         learning_rate=1e-3, weight_decay=1e-2, device="auto", random_state=None):
    """Train an independent multi-label attribute oracle: one sigmoid output per known attribute.

    The attribute-level metrics of DiME (MNAC, CD) and DifCluE's percent conversion judge
    counterfactuals with an *oracle*, a network trained separately from the explained classifier
    to read the ground-truth attributes (on CelebA, a multi-label attribute classifier). This
    trains one timm network from scratch (random weights, nothing is downloaded) with one logit
    per attribute and the binary cross-entropy, on images with known labels such as those of
    :func:`skcfx.datasets.make_shapes`.

    Parameters
    ----------
    X : images
        Training images, in any form skcfx accepts (see :func:`skcfx._images.check_images`).
    attributes : dict of str to array-like of shape (n,), or array-like of shape (n, n_attributes)
        Binary labels (0/1 or booleans). Output ``j`` of the oracle is the ``j``-th key of the
        dict (in its order) or the ``j``-th column of the array.
    model_name : str, default='resnet18'
        timm architecture (``'test_resnet'`` trains in seconds on small images).
    max_epochs : int, default=5
        Passes over the training images.
    batch_size : int, default=128
    learning_rate : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-2
        AdamW decoupled weight decay.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}, default='auto'
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and shuffling; the caller's torch RNG state is left untouched.

    Returns
    -------
    oracle : torch.nn.Module
        The trained timm network in eval mode on ``device``: ``(n, C, H, W)`` inputs in [-1, 1]
        (skcfx's convention), one logit per attribute. Use :func:`attribute_proba` for
        probabilities and :func:`skcfx.metrics.extract_features` for its pooled features (an
        extractor independent of the explained classifier, e.g. for FID).

    Examples
    --------
    >>> from skcfx.datasets import make_shapes
    >>> from skcfx.protocols import attribute_proba, fit_attribute_oracle
    >>> X, attributes = make_shapes(64, image_size=16, random_state=0)
    >>> oracle = fit_attribute_oracle(X, attributes, model_name='test_resnet', max_epochs=1,
    ...                               batch_size=32, device='cpu', random_state=0)
    >>> attribute_proba(oracle, X[:3]).shape
    (3, 8)
    """
    import numbers

    import timm
    import torch

    from ._images import check_images, to_tensor
    from ._validation import resolve_device, seed_from_random_state
    from .metrics._common import check_scalar

    images = check_images(X, name="X")
    _, labels = _attribute_matrix(attributes, images.shape[0])
    for name, value in (("max_epochs", max_epochs), ("batch_size", batch_size)):
        check_scalar(value, name, kind=numbers.Integral, low=1)
    for name, value in (("learning_rate", learning_rate), ("weight_decay", weight_decay)):
        check_scalar(value, name, low=0.0)
    if not isinstance(model_name, str) or not timm.is_model(model_name):
        raise ValueError(f"model_name={model_name!r} is not a timm architecture; see timm.list_models().")
    device = resolve_device(device)
    seed = seed_from_random_state(random_state)
    # timm draws initial weights from the global RNG: fork it so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        module = timm.create_model(model_name, pretrained=False, num_classes=labels.shape[1],
                                   in_chans=images.shape[-1]).to(device)
        _train_multilabel(module, to_tensor(images, device), torch.from_numpy(labels).to(device),
                          max_epochs=max_epochs, batch_size=batch_size, learning_rate=learning_rate,
                          weight_decay=weight_decay, seed=seed)
    return module


def attribute_proba(oracle, images, *, batch_size=256):
    """Attribute probabilities (sigmoid of each logit) of an oracle from :func:`fit_attribute_oracle`.

    Parameters
    ----------
    oracle : torch.nn.Module
        Maps ``(n, C, H, W)`` tensors in [-1, 1] to ``(n, n_attributes)`` logits.
    images : images
        ``(n, H, W, C)`` in [0, 1] (or any form skcfx accepts).
    batch_size : int, default=256

    Returns
    -------
    proba : ndarray of shape (n, n_attributes), float64 in [0, 1]
    """
    import numbers

    import torch

    from ._images import check_images, iter_batches, to_tensor
    from .metrics._common import check_scalar

    if not isinstance(oracle, torch.nn.Module):
        raise TypeError(f"oracle must be a torch.nn.Module, got {type(oracle).__name__}.")
    images = check_images(images, name="images")
    check_scalar(batch_size, "batch_size", kind=numbers.Integral, low=1)
    device = next(iter(oracle.parameters())).device
    was_training = oracle.training
    oracle.eval()
    try:
        with torch.no_grad():
            logits = [oracle(to_tensor(images[sl], device)).float().cpu()
                      for sl in iter_batches(images.shape[0], batch_size)]
    finally:
        oracle.train(was_training)
    logits = torch.cat(logits)
    if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
        raise ValueError(f"oracle must return (n, n_attributes) logits, got shape {tuple(logits.shape)}.")
    return torch.sigmoid(logits.double()).numpy()


__all__ += ["fit_attribute_oracle", "attribute_proba"]
