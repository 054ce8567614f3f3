"""Benchmark: DifCluE's and DiME's evaluation protocols on shapes with known attributes, in one run.

Scenes from ``skcfx.datasets.make_shapes`` carry eight known binary attributes, so every metric
that needs ground truth is computed against it instead of against proxies.

Task (DISSECT / DifCluE mixed-class construction): the positive class is ``color_is_red OR
has_border``; scenes with both attributes are dropped, so every positive shows exactly one of the
two (sub-class 1: red main object, sub-class 2: yellow frame) and the class has two clean modes.
Two spurious correlations (``has_stripes`` copies ``color_is_red`` and ``has_second_object``
copies ``has_border`` with probability ``--correlation``) give the correlation difference (CD)
something to measure.

Models, all trained here on the training split:

* a DiffAEEncoder with ``latent_dropout=0.1`` (its learned null latent is the unconditional
  denoiser DiME and FastDiME guide);
* the explained classifier: a TimmClassifier on the OR-class;
* the attribute oracle: a separate timm network with one sigmoid output per attribute
  (``skcfx.protocols.fit_attribute_oracle``), never seen by the explainers. A single multi-label
  network replaces DiME's CelebA oracle; it costs one training instead of eight binary ones.

Queries: the first ``--n-queries`` held-out scenes of each class, explained towards the other
class by DifCluE (2 modes), DiME and FastDiME (2 samples each) and DISSECT (2 concepts, learnt
jointly on the training scenes, the DifCluE paper's comparator) with the same encoder, classifier
and queries, each method in one batch. DISSECT's concepts are unlabelled: each is named after the
attribute its negatives' counterfactuals show (one to one, ``skcfx.protocols.match_concepts``),
then scored like a mode. On a GPU these small networks are bound by per-call
overhead, so DiME's cost is set by its number of sequential denoiser calls, not by the number of
queries: all methods explain the same queries, and DiME / FastDiME run a 100-step chain from
``tau=30`` (the published noise depth with half the steps: 465 instead of 1830 calls per DiME
attempt) to fit the time budget; ``--dime-respacing 200 --dime-tau 60`` restores the published
chain.

Reported per method (``benchmarks/results/shapes_protocol.json``):

* DiME's table, over all queries (DiME explains both directions): flip rate, FID on the oracle's
  pooled features (successful counterfactuals vs held-out real scenes; ``fid_real_baseline`` is
  the same distance for as many real held-out scenes), MNAC (oracle attributes changed, on
  successful counterfactuals), CD (the query attribute is the OR-label, read off the oracle as
  ``max(p_a, p_b)``), sigma_L (mean pairwise pixel L1 between a query's counterfactuals; LPIPS
  needs downloaded weights), L1 proximity, NFE and seconds per counterfactual.
* DifCluE's table, over the negative queries explained towards the positive class (the paper's
  protocol): percent conversion per mode (the oracle sees the attribute of the sub-class the mode
  recovers; for DISSECT, of the sub-class its concept was named after), which attributes each
  counterfactual slot added, the share of queries whose
  counterfactuals show both concepts, DISSECT distinctness (which slot made the edit?),
  substitutability (the classifier's architecture trained on all counterfactuals, labelled with
  their target, tested on real held-out scenes) and importance (intended vs obtained classifier
  probability of the target class, at the query (0) and the counterfactual (1)). DifCluE's mode
  recovery (ARI between its modes and the sub-classes of the training positives) is reported once.

    python benchmarks/shapes_protocol.py [--image-size 32] [--n-train 6000] [--encoder-steps N]
                                         [--device auto] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time

import numpy as np

from _common import CACHE, edits_and_validity, load_or_fit_encoder, write_json
from skcfx import CounterfactualExplainer, ModalDirectionFinder
from skcfx.classifiers import TimmClassifier
from skcfx.datasets import SHAPES_ATTRIBUTES, make_or_class, make_shapes
from skcfx.methods import DISSECT, DiME, DifCluE, FastDiME
from skcfx.metrics import (correlation_difference, distinctness, diversity, extract_features, frechet_distance,
                           importance, mnac, percent_conversion, proximity, substitutability)
from skcfx.protocols import attribute_proba, fit_attribute_oracle, match_concepts, mode_subclasses

# Full size, sized from one H100 run (torch 2.11) of an earlier setting: this DiffAE took 125 ms per
# training step at batch 128 (1500 steps: 188 s), and one denoiser call on ~200 images about 30 ms:
# the small networks are bound by per-kernel overhead, not arithmetic, so a batch of 256 should cost
# about the same per step (estimated, not measured) and DiME's time grows with its number of
# sequential calls, not with the number of queries. DiME's published chain (tau=60 of 200 steps,
# 1830 calls per attempt, up to 3 attempts) took over 70 s there without finishing; the same noise
# depth on a 100-step chain (tau=30) costs 465 calls per attempt (about 15 s). Expected total:
# about 3 to 3.5 minutes on one H100.
FULL = dict(
    image_size=32, n_train=6000, n_test=2000, correlation=0.6, seed=0,
    or_attributes=("color_is_red", "has_border"),
    correlated_pairs=(("color_is_red", "has_stripes"), ("has_border", "has_second_object")),
    encoder=dict(architecture=dict(model_channels=32, channel_mult=(1, 1, 2), enc_channel_mult=(1, 1, 2, 2),
                                   attention_resolutions=(8,), embed_channels=128, latent_dim=64),
                 max_steps=1000, batch_size=256, learning_rate=1e-3, latent_dropout=0.1,
                 encode_steps=20, decode_steps=20),
    classifier=dict(model_name="resnet18", max_epochs=5, batch_size=128),
    oracle=dict(model_name="resnet18", max_epochs=6, batch_size=128),
    substitute=dict(max_epochs=20, batch_size=32),
    # Independent validity: a classifier of another architecture and seed, never used while generating.
    independent=dict(model_name="resnet10t", max_epochs=5, batch_size=128),
    n_queries=48, n_samples=2, n_modes=2,
    difclue=dict(),
    # About the published depth (tau=60 of 200 noises to t=295 of 1000; tau=30 of 100 to t=290);
    # lambda_c (8, 10, 15) as published.
    dime=dict(respacing=100, tau=30),
    fastdime=dict(respacing=100, tau=30),
    # DISSECT (the DifCluE paper's comparator): K = n_modes traversals, its library defaults.
    dissect=dict(),
    # Extra DifCluE rows, side by side with the default one: name -> overrides of ``difclue``
    # (the ladder alone, without the doublings past it; every decode with the encoder's own steps;
    # the defaults of the release before: an unguided ladder, then the fully guided fallback).
    extra_difclue={"difclue_no_extension": dict(extend_decodes=0), "difclue_decode_20": dict(decode_steps=None),
                   "difclue_unguided_search": dict(guidance_scale=0.0, guidance_interval=1.0)},
    n_fit_guided=256,
)

# CPU smoke run (--quick): tiny networks, short chains; numbers mean nothing, the plumbing is real.
QUICK = dict(
    FULL, image_size=16, n_train=600, n_test=240,
    encoder=dict(architecture=dict(model_channels=16, channel_mult=(1, 1), enc_channel_mult=(1, 1, 2),
                                   attention_resolutions=(8,), embed_channels=32, latent_dim=16),
                 max_steps=150, batch_size=32, learning_rate=2e-3, latent_dropout=0.1,
                 encode_steps=8, decode_steps=8),
    classifier=dict(model_name="test_resnet", max_epochs=4, batch_size=32),
    oracle=dict(model_name="test_resnet", max_epochs=5, batch_size=32),
    substitute=dict(model_name="test_resnet", max_epochs=5, batch_size=16),
    independent=dict(model_name="test_efficientnet", max_epochs=4, batch_size=32),
    n_queries=6,
    difclue=dict(),
    dime=dict(respacing=100, tau=5, lambda_c=(8.0, 15.0)),
    fastdime=dict(respacing=100, tau=8),
    dissect=dict(n_steps=20, batch_size=8, train_decode_steps=2, decode_steps=8, max_train_images=128),
    n_fit_guided=128,
)

# 2-core CPU run (--cpu): 16 px scenes, the 16 px digits architecture trained 4000 steps (30 min
# measured with other jobs sharing the cores; cached in benchmarks/output/ for reruns, which then
# take about 13 min: classifier, oracle, six methods and their metrics; measured with two other jobs).
CPU = dict(
    FULL, image_size=16, n_train=3000, n_test=1000,
    encoder=dict(architecture=dict(model_channels=16, channel_mult=(1, 1), enc_channel_mult=(1, 2, 2),
                                   attention_resolutions=(8,), embed_channels=64, latent_dim=32),
                 max_steps=8000, batch_size=64, learning_rate=1e-3, latent_dropout=0.1,
                 encode_steps=20, decode_steps=20),
    classifier=dict(model_name="resnet18", max_epochs=5, batch_size=64),
    oracle=dict(model_name="resnet18", max_epochs=6, batch_size=64),
    substitute=dict(model_name="test_resnet", max_epochs=20, batch_size=32),
    independent=dict(model_name="resnet10t", max_epochs=5, batch_size=64),
    # 64 queries per class: with 32, the "red" mode's conversion moved by 0.12 between two runs.
    n_queries=64,
    # dissect_compare.py's digits setting (16 px too: storing the decode graph beats recomputing it).
    dissect=dict(n_steps=300, batch_size=16, decode_steps=10, checkpoint=False),
)


# ---------------------------------------------------------------------------------------------------
# data and models
# ---------------------------------------------------------------------------------------------------


def make_task(cfg):
    """Shapes with the OR-class; scenes showing both OR attributes are dropped.

    Returns a dict with ``X_train``, ``X_test``, ``y_*`` (OR-label), ``sub_*`` (0 neither, 1 only
    the first attribute, 2 only the second) and ``attr_*`` (dict of the eight attributes).
    """
    a, b = cfg["or_attributes"]
    n_wanted = cfg["n_train"] + cfg["n_test"]
    # A quarter of the scenes show both attributes (independent draws); 1.6x leaves a wide margin.
    X, attributes = make_shapes(int(1.6 * n_wanted) + 16, cfg["image_size"], random_state=cfg["seed"],
                                correlation=cfg["correlation"], correlated_pairs=cfg["correlated_pairs"])
    y, sub = make_or_class(attributes, a, b)
    keep = np.flatnonzero(sub != 3)
    if keep.size < n_wanted:
        raise ValueError(f"only {keep.size} scenes without both {a} and {b}; lower n_train or n_test.")
    train, test = keep[: cfg["n_train"]], keep[cfg["n_train"]: n_wanted]
    task = {"names": list(attributes), "a": a, "b": b}
    for split, idx in (("train", train), ("test", test)):
        task[f"X_{split}"], task[f"y_{split}"], task[f"sub_{split}"] = X[idx], y[idx], sub[idx]
        task[f"attr_{split}"] = {k: v[idx] for k, v in attributes.items()}
    return task


class _Clock:
    """Times stages, logs each one as it ends and keeps the seconds for the JSON."""

    def __init__(self, log):
        self.log, self.seconds = log, {}

    def __call__(self, label, fn):
        start = time.perf_counter()
        out = fn()
        self.seconds[label] = time.perf_counter() - start
        self.log(f"[{label}] {self.seconds[label]:.1f} s")
        return out, self.seconds[label]


def fit_models(task, cfg, device, clock):
    """Train the DiffAE, the explained classifier and the attribute oracle; returns (models, info)."""
    seed = cfg["seed"]
    X, y = task["X_train"], task["y_train"]
    (encoder, from_cache), _ = clock("DiffAE", lambda: _cached_encoder(cfg, device, X))
    classifier, t_clf = clock("classifier", lambda: TimmClassifier(device=device, random_state=seed,
                                                                         **cfg["classifier"]).fit(X, y))
    oracle, t_orc = clock("oracle", lambda: fit_attribute_oracle(
        X, task["attr_train"], device=device, random_state=seed + 1, **cfg["oracle"]))
    independent, t_ind = clock("independent classifier", lambda: TimmClassifier(
        device=device, random_state=seed + 2, **cfg["independent"]).fit(X, y))
    X_test = task["X_test"]
    p_test = attribute_proba(oracle, X_test)
    oracle_acc = {name: float(np.mean((p_test[:, j] > 0.5) == task["attr_test"][name]))
                  for j, name in enumerate(task["names"])}
    sample = X_test[:64]
    info = {
        # A cached encoder reports the training time recorded when it was trained.
        "encoder": {"fit_time_s": float(encoder.fit_time_s_), "from_cache": from_cache,
                    "n_steps": int(encoder.n_steps_),
                    "n_parameters": int(sum(p.numel() for p in encoder.net_.parameters())),
                    "final_loss": float(np.mean(encoder.loss_history_[-100:])),
                    "reconstruction_mse": float(np.mean((encoder.reconstruct(sample) - sample) ** 2)),
                    "params": {k: v for k, v in encoder.get_params().items() if k != "checkpoint_path"}},
        "classifier": {"fit_time_s": t_clf, "params": cfg["classifier"],
                       "accuracy": float(np.mean(classifier.predict(X_test) == task["y_test"]))},
        "oracle": {"fit_time_s": t_orc, "params": cfg["oracle"], "accuracy": oracle_acc,
                   "mean_accuracy": float(np.mean(list(oracle_acc.values())))},
        "independent": {"fit_time_s": t_ind, "params": cfg["independent"],
                        "accuracy": float(np.mean(independent.predict(X_test) == task["y_test"]))},
    }
    clock.log(f"classifier accuracy {info['classifier']['accuracy']:.3f}; oracle accuracy {oracle_acc}")
    return {"encoder": encoder, "classifier": classifier, "oracle": oracle, "independent": independent}, info


def _cached_encoder(cfg, device, X):
    """Train the DiffAE, or reuse the one a previous run trained with the same data and recipe.

    The cache key covers everything that shapes the encoder (data settings, seed, encoder
    parameters); ``--no-cache`` retrains. Returns ``(encoder, from_cache)``.
    """
    key_cfg = {k: cfg[k] for k in ("image_size", "n_train", "correlation", "seed", "or_attributes",
                                    "correlated_pairs", "encoder")}
    key = hashlib.sha1(json.dumps(key_cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = CACHE / f"shapes_encoder_{cfg['image_size']}px_{key}.pt"
    return load_or_fit_encoder(path, X, {"random_state": cfg["seed"], **cfg["encoder"]},
                               use_cache=cfg.get("cache", False), device=device)


def split_test(task, n_queries, n_cf):
    """Indices into the test split: queries (negatives first), FID reference, real FID baseline, rest."""
    y = task["y_test"]
    neg, pos = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    if min(neg.size, pos.size) < n_queries:
        raise ValueError(f"the test split has {neg.size} negatives and {pos.size} positives; n_queries={n_queries}.")
    queries = np.concatenate([neg[:n_queries], pos[:n_queries]])
    rest = np.setdiff1d(np.arange(y.size), queries)
    if rest.size < n_cf + 2:
        raise ValueError(f"the test split leaves {rest.size} scenes besides the queries; need more than {n_cf + 2}.")
    return {"queries": queries, "baseline": rest[:n_cf], "reference": rest[n_cf:], "heldout": rest}


# ---------------------------------------------------------------------------------------------------
# explanations
# ---------------------------------------------------------------------------------------------------


def explain_all(models, task, queries, targets, cfg, clock):
    """Explain ``queries`` towards ``targets`` with DifCluE, DiME and FastDiME.

    Returns ``{name: (explanation, explainer)}``.
    """
    seed = cfg["seed"]
    common = dict(encoder=models["encoder"], classifier=models["classifier"], random_state=seed,
                  batch_size=max(len(queries), 1))
    X, y = task["X_train"], task["y_train"]
    # DiME and FastDiME learn nothing from the training set: a small subset only checks the models.
    n_fit = cfg["n_fit_guided"]
    methods = {
        "difclue": (DifCluE(**cfg["difclue"]), X, y),
        **{name: (DifCluE(**{**cfg["difclue"], **overrides}), X, y)
           for name, overrides in cfg.get("extra_difclue", {}).items()},
        "dime": (DiME(n_samples=cfg["n_samples"], **cfg["dime"]), X[:n_fit], y[:n_fit]),
        "fastdime": (FastDiME(n_samples=cfg["n_samples"], **cfg["fastdime"]), X[:n_fit], y[:n_fit]),
        # DISSECT learns its K traversals on (a subset of) the training scenes: its fit is the training.
        "dissect": (DISSECT(n_concepts=cfg["n_modes"], **cfg.get("dissect", {})), X, y),
    }
    out = {}
    for name, (method, X_fit, y_fit) in methods.items():
        finder = ModalDirectionFinder(n_modes=cfg["n_modes"], random_state=seed) \
            if isinstance(method, DifCluE) else None
        explainer, t_fit = clock(f"{name} fit", lambda: CounterfactualExplainer(
            direction_finder=finder, method=method, **common).fit(X_fit, y_fit))
        explanation, _ = clock(f"{name} explain", lambda: explainer.explain(queries, target_class=targets))
        explanation.info["explainer_fit_s"] = t_fit
        clock.log(f"{name}: {explanation!r}")
        out[name] = (explanation, explainer)
    return out


# ---------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------


def _with_label(p, ia, ib):
    """Append the OR-label column ``max(p_a, p_b)`` (binarised at 0.5 it is ``a OR b``)."""
    return np.concatenate([p, np.maximum(p[..., ia], p[..., ib])[..., None]], axis=-1)


def dime_table(e, oracle_q, oracle_cf, ctx):
    """DiME's metrics over all queries; MNAC, CD and FID on the successful counterfactuals."""
    qi, kj = np.nonzero(e.success)
    n_neg = ctx["n_neg"]
    row = {
        "flip_rate": e.flip_rate,
        "flip_rate_negatives": float(e.success[:n_neg].mean()),
        "flip_rate_positives": float(e.success[n_neg:].mean()),
        "n_successful": int(qi.size),
        "l1": float(proximity(e.images, e.counterfactuals)),
        "sigma_L": float(diversity(e.counterfactuals)) if e.counterfactuals.shape[1] > 1 else float("nan"),
        "n_function_evals": float(e.n_function_evals),
        "seconds_per_counterfactual": float(e.wall_time_s / e.success.size),
        "fid": float("nan"), "mnac": float("nan"), "cd": float("nan"), "cd_note": None,
        **edits_and_validity(e, ctx["independent"].predict),
    }
    if qi.size >= 2:
        cf_features = extract_features(e.counterfactuals[qi, kj], ctx["oracle"])
        row["fid"] = float(frechet_distance(ctx["reference_features"], cf_features))
    if qi.size:
        row["mnac"] = float(mnac(oracle_q[qi], oracle_cf[qi, kj]))
        ia, ib = ctx["ia"], ctx["ib"]
        try:
            cd = correlation_difference(ctx["dataset_labels"], ctx["label_column"], _with_label(oracle_q[qi], ia, ib),
                                        _with_label(oracle_cf[qi, kj], ia, ib), return_correlations=True)
            row["cd"] = cd["cd"]
            row["cd_correlations"] = {"dataset": cd["dataset"], "counterfactual": cd["counterfactual"]}
        except ValueError as exc:  # CD is undefined when the oracle sees every label change alike
            row["cd_note"] = str(exc)
    return row


def _attribute_added(oracle_cf_neg, ia, ib, names):
    """Per slot, the share of negatives' counterfactuals in which the oracle sees a only, b only, both, neither."""
    has_a, has_b = oracle_cf_neg[..., ia] > 0.5, oracle_cf_neg[..., ib] > 0.5
    a, b = names[ia], names[ib]
    cases = {f"{a}_only": has_a & ~has_b, f"{b}_only": ~has_a & has_b, "both": has_a & has_b,
             "neither": ~has_a & ~has_b}
    per_slot = [{case: float(mask[:, j].mean()) for case, mask in cases.items()} for j in range(has_a.shape[1])]
    coverage = float(np.mean(has_a.any(axis=1) & has_b.any(axis=1)))
    return per_slot, coverage


def _percent_conversion(e, oracle_cf_neg, ctx, mapping):
    """Percent conversion: mode (or concept) k's counterfactual shows the attribute of k's sub-class."""
    n_neg = ctx["n_neg"]
    attr_of_sub = {1: ctx["ia"], 2: ctx["ib"]}
    modes = e.mode_ids[:n_neg]
    expected = np.vectorize(lambda m: attr_of_sub.get(mapping.get(int(m), 0), -1))(modes)
    if (expected < 0).any():
        return None
    res = percent_conversion(oracle_cf_neg, expected)
    per_mode = [{"mode": int(modes[0, j]), "attribute": ctx["names"][int(expected[0, j])], "rate": float(r)}
                for j, r in enumerate(res["per_mode"])]
    return {"per_mode": per_mode, "mean": res["mean"]}


def _subclass_reader(oracle, ia, ib):
    """Images -> the sub-class the oracle sees (1: attribute a, 2: attribute b, the likelier if both; -1: neither)."""
    def read(images):
        p = attribute_proba(oracle, images)
        pa, pb = p[:, ia], p[:, ib]
        return np.where((pa > 0.5) & (pa >= pb), 1, np.where(pb > 0.5, 2, -1))
    return read


def concept_subclasses(e, ctx):
    """DISSECT's concepts are unlabelled: name each after the sub-class its negatives' counterfactuals show."""
    return match_concepts(e, _subclass_reader(ctx["oracle"], ctx["ia"], ctx["ib"]), (1, 2),
                          queries=np.arange(ctx["n_neg"]))


def difclue_table(e, oracle_cf, ctx, mapping=None):
    """DifCluE/DISSECT metrics: conversion and distinctness on negatives; substitutability and importance on all.

    ``mapping`` (mode or concept -> sub-class) is None for methods without modes: no conversion.
    """
    n_neg, k = ctx["n_neg"], e.counterfactuals.shape[1]
    oracle_cf_neg = oracle_cf[:n_neg]
    added, coverage = _attribute_added(oracle_cf_neg, ctx["ia"], ctx["ib"], ctx["names"])
    row = {"percent_conversion": _percent_conversion(e, oracle_cf_neg, ctx, mapping) if mapping else None,
           "attribute_added_per_slot": added, "both_concepts_shown": coverage}
    if mapping:
        row["mode_to_subclass"] = {str(m): int(v) for m, v in mapping.items()}
    if k > 1 and n_neg >= 2:
        row["distinctness"] = distinctness(e.images[:n_neg], e.counterfactuals[:n_neg], np.arange(k),
                                           cv=min(5, n_neg), random_state=0)
    valid = e.cf_target_class >= 0
    qi, kj = np.nonzero(valid)
    targets = e.cf_target_class[qi, kj]
    row["substitutability"] = substitutability(
        e.counterfactuals[qi, kj], e.classes[targets], ctx["X_heldout"], ctx["y_heldout"],
        lambda: TimmClassifier(device=ctx["device"], random_state=0, **ctx["substitute"]), ctx["classifier_score"])
    p_query = e.original_proba[qi, targets]
    p_cf = e.cf_proba[qi, kj, targets]
    row["importance"] = importance(np.r_[np.zeros_like(p_query), np.ones_like(p_cf)], np.r_[p_query, p_cf])
    return row


def evaluate(explanations, models, task, split, cfg, device, clock):
    """Both tables for every method, plus the protocol-level figures (mode recovery, FID baseline)."""
    names = task["names"]
    ia, ib = names.index(task["a"]), names.index(task["b"])
    oracle = models["oracle"]
    X_test = task["X_test"]
    difclue_explainer = explanations["difclue"][1]
    mapping, recovery = mode_subclasses(difclue_explainer.direction_finder_, task["sub_train"], class_label=1)
    labels = np.stack([task["attr_train"][n] for n in names], axis=1)
    heldout = split["heldout"]
    ctx = {
        "names": names, "ia": ia, "ib": ib, "n_neg": cfg["n_queries"], "oracle": oracle, "device": device,
        "independent": models["independent"],
        "label_column": len(names),
        "dataset_labels": np.concatenate([labels, task["y_train"][:, None]], axis=1),
        "reference_features": extract_features(X_test[split["reference"]], oracle),
        "X_heldout": X_test[heldout], "y_heldout": task["y_test"][heldout],
        "classifier_score": float(models["classifier"].score(X_test[heldout], task["y_test"][heldout])),
        "substitute": {**cfg["classifier"], **cfg["substitute"]},
    }
    baseline = frechet_distance(ctx["reference_features"], extract_features(X_test[split["baseline"]], oracle))
    methods = {}
    for name, (e, explainer) in explanations.items():
        n, k = e.success.shape
        oracle_q = attribute_proba(oracle, e.images)
        oracle_cf = attribute_proba(oracle, e.counterfactuals.reshape((n * k,) + e.images.shape[1:])).reshape(n, k, -1)
        method_mapping = None
        if name == "dissect":
            method_mapping = concept_subclasses(e, ctx)
        elif isinstance(explainer.method_, DifCluE):  # every DifCluE row fits the same finder: same modes
            method_mapping = mapping if name == "difclue" else \
                mode_subclasses(explainer.direction_finder_, task["sub_train"], class_label=1)[0]
        (row, t) = clock(f"{name} metrics", lambda: {"dime_table": dime_table(e, oracle_q, oracle_cf, ctx),
                                                           "difclue_table": difclue_table(e, oracle_cf, ctx,
                                                                                          method_mapping)})
        row["info"] = e.info
        row["metrics_time_s"] = t
        methods[name] = row
    protocol = {"mode_recovery": recovery, "mode_to_subclass": {str(m): int(s) for m, s in mapping.items()},
                "subclass_names": {"1": task["a"], "2": task["b"]}, "fid_real_baseline": float(baseline),
                "n_fid_reference": int(len(split["reference"])), "n_fid_baseline": int(len(split["baseline"])),
                "classifier_score_heldout": ctx["classifier_score"]}
    return protocol, methods


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------


def _f(value, digits=2):
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _conversion_cell(difclue_row):
    pc = difclue_row["percent_conversion"]
    if pc is None:
        return "n/a"
    return " / ".join(f"{m['attribute']} {_f(m['rate'])}" for m in pc["per_mode"]) + f" (mean {_f(pc['mean'])})"


def readme_lines(result):
    """Markdown lines (a sentence and a table) summarising the main figures."""
    s, p, m = result["settings"], result["protocol"], result["models"]
    a, b = s["or_attributes"]
    lines = [
        f"Positive class `{a}` OR `{b}` ({s['image_size']} px, {s['n_train']} training scenes, none with both; "
        f"{', '.join(f'`{t}` follows `{src}`' for src, t in s['correlated_pairs'])} with probability "
        f"{s['correlation']}). DiffAE {m['encoder']['n_steps']} steps ({m['encoder']['fit_time_s']:.0f} s); "
        f"classifier accuracy {_f(m['classifier']['accuracy'], 3)}; independent classifier "
        f"(`{m.get('independent', {}).get('params', {}).get('model_name', 'n/a')}`, validity column) accuracy "
        f"{_f(m.get('independent', {}).get('accuracy'), 3)}; oracle accuracy "
        f"{_f(m['oracle']['mean_accuracy'], 3)} (mean of 8 attributes); DifCluE mode recovery ARI "
        f"{_f(p['mode_recovery']['ari'])}. "
        f"{s['n_queries']} held-out queries per class, {s['n_samples']} counterfactuals each; DiME and FastDiME "
        f"from tau {s['dime'].get('tau', 60)} of {s['dime'].get('respacing', 200)} steps. FID on the oracle's "
        f"pooled features (real-vs-real baseline {_f(p['fid_real_baseline'], 1)}); sigma_L = pixel L1; "
        "spread ratio = how much the flipped counterfactuals of one mode differ from each other relative to "
        "their queries (1: they keep what differs between queries, 0: one template); "
        "conversion, both-shown and distinctness on negatives only.",
        "",
        "| method | flip rate (negatives / positives) | independent validity | FID | MNAC | CD | sigma_L "
        "| spread ratio (flipped) | percent conversion per mode | both concepts shown "
        "| distinctness acc. | substitutability ratio | importance R | NFE / CF | s / CF | method fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["methods"].items():
        d, c = row["dime_table"], row["difclue_table"]
        dist = c.get("distinctness", {}).get("accuracy")
        lines.append(
            f"| {name} | {_f(d['flip_rate'])} ({_f(d.get('flip_rate_negatives'))} / {_f(d.get('flip_rate_positives'))}) "
            f"| {_f(d.get('independent_validity'))} | {_f(d['fid'], 1)} | {_f(d['mnac'])} | {_f(d['cd'])} | "
            f"{_f(d['sigma_L'], 3)} | {_f(d.get('spread_ratio_flipped'))} | {_conversion_cell(c)} | {_f(c['both_concepts_shown'])} | {_f(dist)} | "
            f"{_f(c['substitutability']['ratio'])} | {_f(c['importance']['R'])} | {d['n_function_evals']:.0f} | "
            f"{d['seconds_per_counterfactual']:.3f} | {_f(row['info'].get('explainer_fit_s'), 1)} |")
    return lines


def save_figures(explanations, log, n_rows=6):
    """One PNG per method (queries, counterfactuals, differences) in benchmarks/output/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for name, (e, _) in explanations.items():
        n_neg = e.n_queries // 2
        rows = np.r_[np.arange(min(n_rows // 2, n_neg)), n_neg + np.arange(min(n_rows // 2, n_neg))]
        path = CACHE / f"shapes_protocol_{name}.png"
        e.plot(rows).savefig(path, dpi=80)
        log(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------


def run(cfg, device="auto", log=print, figures=False):
    """Run the whole protocol for configuration ``cfg`` (see FULL); returns the JSON payload."""
    start = time.perf_counter()
    clock = _Clock(log)
    task, t_data = clock("data", lambda: make_task(cfg))
    models, model_info = fit_models(task, cfg, device, clock)
    split = split_test(task, cfg["n_queries"], 2 * cfg["n_queries"] * cfg["n_samples"])
    queries = task["X_test"][split["queries"]]
    # The true class decides the target (not the classifier's prediction, as target_class=None
    # would): negatives go to the positive class, as in the DifCluE protocol, and back.
    targets = 1 - task["y_test"][split["queries"]]
    explanations = explain_all(models, task, queries, targets, cfg, clock)
    protocol, methods = evaluate(explanations, models, task, split, cfg, device, clock)
    if figures:
        save_figures(explanations, log)
    settings = {k: v for k, v in cfg.items() if k not in ("encoder", "classifier", "oracle")}
    settings["device"] = str(models["encoder"].device_)
    result = {
        "settings": settings,
        "data": {"n_train": int(task["y_train"].size), "n_test": int(task["y_test"].size),
                 "positive_share_train": float(task["y_train"].mean()), "attributes": list(SHAPES_ATTRIBUTES),
                 "data_time_s": t_data},
        "models": model_info, "protocol": protocol, "methods": methods,
        "stage_times_s": clock.seconds, "total_time_s": time.perf_counter() - start,
    }
    result = _finite_or_none(result)
    result["readme_lines"] = readme_lines(result)
    return result


def _finite_or_none(value):
    """Plain JSON: numpy values to Python ones, NaN and infinities to None (strict parsers reject NaN)."""
    if isinstance(value, dict):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite_or_none(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def build_config(args):
    cfg = copy.deepcopy(QUICK if args.quick else CPU if args.cpu else FULL)
    for key in ("image_size", "n_train", "n_test", "n_queries"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.encoder_steps is not None:
        cfg["encoder"]["max_steps"] = args.encoder_steps
    cfg["cache"] = not getattr(args, "no_cache", False)
    for key in ("respacing", "tau"):
        value = getattr(args, f"dime_{key}")
        if value is not None:
            cfg["dime"][key] = cfg["fastdime"][key] = value
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=None, help="default 32 (16 with --quick)")
    parser.add_argument("--n-train", type=int, default=None, help="training scenes (default 6000; 600 with --quick)")
    parser.add_argument("--n-test", type=int, default=None, help="held-out scenes (default 2000; 240 with --quick)")
    parser.add_argument("--n-queries", type=int, default=None, help="queries per class (default 48; 6 with --quick)")
    parser.add_argument("--encoder-steps", type=int, default=None, help="DiffAE steps (default 1000; 150 with --quick)")
    parser.add_argument("--dime-respacing", type=int, default=None,
                        help="DiME/FastDiME chain length (default 100; published 200)")
    parser.add_argument("--dime-tau", type=int, default=None,
                        help="DiME/FastDiME noising depth in chain steps (default 30; published 60)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--quick", action="store_true", help="tiny CPU smoke configuration")
    parser.add_argument("--cpu", action="store_true",
                        help="16 px configuration for a 2-core CPU (~40 min from scratch, ~13 with a cached DiffAE)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNGs in benchmarks/output/")
    parser.add_argument("--no-cache", action="store_true", help="retrain the DiffAE even if benchmarks/output/ has it")
    args = parser.parse_args()

    def log(message):
        print(message, flush=True)

    result = run(build_config(args), device=args.device, log=log, figures=not args.no_figures)
    write_json("shapes_protocol_quick" if args.quick else "shapes_protocol", result)
    print("\n".join(result["readme_lines"]))


if __name__ == "__main__":
    main()
