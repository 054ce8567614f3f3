"""Benchmark: DifCluE's mixed-class protocol on Fashion-MNIST (28 px), next to DiME and FastDiME.

Two garment classes form the positive class; the eight others are negative. Held-out negatives
are explained towards each mode of the positive class, and an oracle trained on the ten classes
(a timm network the explainers never see) reads which garment each counterfactual shows.
Pairs (issue 14): (Ankle boot, T-shirt/top) and (Pullover, Sandal).

Stages:

* ``--prepare``: train the DiffAE (default ``DiffAEEncoder`` recipe on ``--n-train``
  training images) and cache it in ``SKCFX_BENCH_CACHE`` (default benchmarks/output/).
  ``--train-budget-min`` stops one call after that many minutes of wall time; the next
  ``--prepare`` goes on from there until ``max_steps``. Protocol runs use the cached DiffAE as
  far as it got (its steps are reported).
* default: the protocol on the cached DiffAE. Per pair: a TimmClassifier (resnet18) on the
  binary labels; ``ModalDirectionFinder(n_modes=2)`` on the DiffAE latents of the training
  images; the same queries explained by every method of ``--methods`` (``METHODS`` below: one
  line adds a method). Reported per method: percent conversion per mode, flip rate, mode
  recovery ARI, FID on the oracle's pooled features (successful counterfactuals vs held-out
  real images, with the real-vs-real baseline for as many real images), MNAC-style oracle
  changes (MNAC with the oracle's 10 class probabilities as attributes, the share of
  counterfactuals whose oracle class changed, and the mean L1 change of those probabilities), sigma_L (mean pairwise pixel L1 between a query's
  counterfactuals), L1 proximity, NFE and seconds per counterfactual. The DiffAE's training time,
  steps, held-out reconstruction MSE and its semantic control (share of latent/noise swaps the
  oracle reads as the latent's class, ``_common.semantic_control``) are reported once.
* ``--quick``: a smoke run (tiny DiffAE trained on the spot, tiny networks, few queries; the
  numbers mean nothing, the plumbing is real).

    python benchmarks/fashion_protocol.py --prepare [--train-budget-min 60] [--max-steps N]   # again to go on
    python benchmarks/fashion_protocol.py --encoder-file FILE.pt --name NAME   # on a saved DiffAE
    python benchmarks/fashion_protocol.py [--methods difclue paper_alpha dime fastdime] [--n-queries 40]
    python benchmarks/fashion_protocol.py --quick
    python benchmarks/fashion_protocol.py --length-curve step2500.ckpt step5000.ckpt ...
    python benchmarks/fashion_protocol.py --mode-recovery   # K-means vs the mixture, no decode
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import signal
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from _common import CACHE, RESULTS, UNGUIDED_SEARCH, edits_and_validity, load_or_fit, semantic_control, write_json
from skcfx import CounterfactualExplainer, DiffAEEncoder, ModalDirectionFinder
from skcfx.classifiers import TimmClassifier
from skcfx.datasets import load_fashion_mnist
from skcfx.methods import DISSECT, DiME, DifCluE, FastDiME
from skcfx.metrics import diversity, extract_features, frechet_distance, mnac
from skcfx.protocols import evaluate_mode_conversion, match_concepts, mixed_class_labels, mode_subclasses

PAIRS = (("Ankle boot", "T-shirt/top"), ("Pullover", "Sandal"))

FULL = dict(
    n_train=10000, n_test=10000, seed=0,
    # The library defaults, spelled out (DiffAEEncoder() with random_state=0); at 28 px
    # architecture='auto' is the tiny16 layout (width 16, levels 28 and 14, attention at 14,
    # latent 32, 0.19M parameters).
    encoder=dict(max_steps=20000, batch_size=64, learning_rate=1e-3, latent_dropout=0.1,
                 encode_steps=20, decode_steps=20),
    # Wall-time limit of one --prepare call (None: train to max_steps); later calls go on.
    train_budget_min=None,
    # One epoch: on the shared 2-core CPU the 10-class oracle's 3 epochs took 21 min.
    classifier=dict(model_name="resnet18", max_epochs=1, batch_size=64),
    oracle=dict(model_name="resnet18", max_epochs=3, batch_size=64),
    # Independent validity: per pair, a classifier of another architecture and seed, never used while generating.
    independent=dict(model_name="resnet10t", max_epochs=1, batch_size=64),
    n_queries=30, n_guided_queries=6, n_samples=2, n_modes=2,
    # Images the explainers are fitted on (DifCluE's latent surrogate and source clusters); the
    # modes are found on all n_train latents.
    n_fit_explainer=4000,
    # The paper's recipe: one fixed step along the mode-vs-rest direction for every query.
    paper_alpha=1.0,
    dime=dict(respacing=100, tau=30), fastdime=dict(respacing=100, tau=30),
    n_fid_baseline=200, n_semantic_pairs=200,
)

QUICK = dict(
    FULL, n_train=600, n_test=400,
    encoder=dict(architecture=dict(model_channels=16, channel_mult=(1, 1), enc_channel_mult=(1, 1, 2),
                                   attention_resolutions=(7,), embed_channels=32, latent_dim=16),
                 max_steps=60, batch_size=32, learning_rate=2e-3, latent_dropout=0.1,
                 encode_steps=6, decode_steps=6),
    train_budget_min=5.0,
    classifier=dict(model_name="test_resnet", max_epochs=2, batch_size=32),
    oracle=dict(model_name="test_resnet", max_epochs=2, batch_size=32),
    independent=dict(model_name="test_efficientnet", max_epochs=2, batch_size=32),
    n_queries=4, n_guided_queries=2, n_fit_explainer=300,
    dime=dict(respacing=50, tau=4, lambda_c=(8.0,)), fastdime=dict(respacing=50, tau=6),
    n_fid_baseline=40, n_semantic_pairs=40,
)


# ---------------------------------------------------------------------------------------------------
# data and the DiffAE
# ---------------------------------------------------------------------------------------------------


def load_data(cfg):
    """The first ``n_train`` training and ``n_test`` test images (uint8) with labels and names."""
    X_train, y_train, names = load_fashion_mnist(cfg.get("path"), subset="train")
    X_test, y_test, _ = load_fashion_mnist(cfg.get("path"), subset="test")
    return {"X_train": X_train[: cfg["n_train"]], "y_train": y_train[: cfg["n_train"]],
            "X_test": X_test[: cfg["n_test"]], "y_test": y_test[: cfg["n_test"]], "names": names}


def encoder_path(cfg):
    """Cache file of the DiffAE for this data and recipe.

    Neither the time budget nor ``max_steps`` is part of the key: a longer recipe goes on from
    what a shorter one reached.
    """
    recipe = {k: v for k, v in cfg["encoder"].items() if k != "max_steps"}
    key_cfg = {**{k: cfg[k] for k in ("n_train", "seed")}, "encoder": recipe}
    key = hashlib.sha1(json.dumps(key_cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return CACHE / f"fashion_encoder_28px_{key}.pt"


def train_encoder(cfg, X, log=print):
    """Train the DiffAE towards ``max_steps``, stopping cleanly after the time budget.

    Each call continues what earlier calls reached: from the training checkpoint next to the
    cache file (exact resume), else from the saved cache file itself (warm start, the optimizer
    restarted; e.g. a file carried over from another machine). A call that hits the budget
    (SIGINT at a step boundary) saves the weights of its last completed step.
    """
    path = encoder_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = str(path) + ".ckpt"
    params = dict(verbose=True, checkpoint_path=checkpoint, checkpoint_every=100, **cfg["encoder"])
    meta_path = path.with_suffix(".json")
    earlier_s = json.loads(meta_path.read_text()).get("total_fit_time_s", 0.0) if meta_path.is_file() else 0.0
    if not os.path.isfile(checkpoint) and path.is_file():
        encoder = DiffAEEncoder.load(path).set_params(warm_start=True, **params)
        log(f"continuing {path} from step {encoder.n_steps_} (optimizer restarted)")
    else:
        encoder = DiffAEEncoder(random_state=cfg["seed"], **params)
    budget_min = cfg.get("train_budget_min")
    previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    signal.alarm(int(budget_min * 60) if budget_min else 0)
    stopped = False
    try:
        encoder.fit(X)
    except KeyboardInterrupt:
        stopped = True
        log(f"time budget of {budget_min} min reached after {encoder.n_steps_} steps")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    encoder.set_params(checkpoint_path=None, warm_start=False)
    encoder.save(path)
    meta = {"n_steps": int(encoder.n_steps_), "max_steps": int(cfg["encoder"]["max_steps"]),
            "stopped_by_budget": stopped, "fit_time_s": encoder.fit_time_s_,
            "total_fit_time_s": earlier_s + encoder.fit_time_s_}
    meta_path.write_text(json.dumps(meta))
    log(f"saved {path}: {meta}")
    return encoder, meta


def load_encoder(cfg, X, log=print, *, train_more=False):
    """The cached DiffAE of this recipe, else train it now. Returns ``(encoder, info)``.

    With ``train_more`` (``--prepare``) a cached DiffAE short of ``max_steps`` is trained on.
    """
    path = encoder_path(cfg)
    if path.is_file():
        meta = json.loads(path.with_suffix(".json").read_text())
        if not (train_more and meta["n_steps"] < cfg["encoder"]["max_steps"]):
            if meta["n_steps"] != cfg["encoder"]["max_steps"]:
                log(f"the cached DiffAE has {meta['n_steps']} of max_steps={cfg['encoder']['max_steps']} steps "
                    "(--prepare trains it on)")
            return DiffAEEncoder.load(path), {**meta, "from_cache": True, "path": str(path)}
    encoder, meta = train_encoder(cfg, X, log)
    return encoder, {**meta, "from_cache": False, "path": str(path)}


def cached_classifier(cfg, name, X, y, seed):
    """A TimmClassifier for ``name`` (its labels ``y``), cached next to the DiffAE; ``(clf, fit_s, cached)``."""
    key_cfg = {k: cfg[k] for k in ("n_train", "seed")}
    role = "oracle" if name == "oracle" else "independent" if name.startswith("independent") else "classifier"
    key_cfg.update(params=cfg[role], name=name, seed_used=seed)
    key = hashlib.sha1(json.dumps(key_cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = CACHE / f"fashion_{name.replace(' ', '_').replace('/', '_')}_{key}.joblib"

    def fit():  # the training time travels with the cached classifier
        start = time.perf_counter()
        clf = TimmClassifier(random_state=seed, **key_cfg["params"]).fit(X, y)
        return clf, time.perf_counter() - start

    (clf, fit_s), fit_now = load_or_fit(path, fit)
    return clf, fit_s, fit_now is None


# ---------------------------------------------------------------------------------------------------
# methods: name -> (factory(cfg) -> method, uses the modes, guided: explains only the first
# n_guided_queries queries because each counterfactual costs hundreds of denoiser calls)
# ---------------------------------------------------------------------------------------------------

METHODS = {
    "difclue": (lambda cfg: DifCluE(), True, False),
    "paper_alpha": (lambda cfg: DifCluE(alpha=cfg["paper_alpha"], contrast="rest"), True, False),
    # Extra row (not a default): a 4x longer reach along the direction with more decodes.
    "difclue_far": (lambda cfg: DifCluE(alpha_max=32.0, max_decodes=6), True, False),
    # Extra row (not a default): every decode with the DiffAE's own 20 steps instead of DifCluE's 10.
    "difclue_decode_20": (lambda cfg: DifCluE(decode_steps=None), True, False),
    # Extra rows (not defaults): no latent guidance at all (what an encoder without a null latent
    # gets), and guidance on every step of every decode.
    "difclue_no_retry": (lambda cfg: DifCluE(guidance_scale=0.0, retry_guidance=0.0), True, False),
    "difclue_guided": (lambda cfg: DifCluE(guidance_scale=2.0, guidance_interval=1.0, retry_guidance=0.0), True,
                       False),
    # Extra row (not a default): guidance on the noisiest half of every decode's steps instead of
    # the default's interval (0.1, 0.6) of t / T.
    "difclue_noisiest_half": (lambda cfg: DifCluE(guidance_interval=0.5), True, False),
    # Extra row: the defaults of the release before (an unguided ladder, then the local fallback
    # with every step guided), side by side with the defaults now.
    "difclue_unguided_search": (lambda cfg: DifCluE(**UNGUIDED_SEARCH), True, False),
    # Extra row (not a default): the guided retry without its search, its fallback only (cheaper).
    "difclue_retry_fallback": (lambda cfg: DifCluE(retry_search=False, unguided_rescue=True, max_decodes=4,
                                                   fallback="centre", **UNGUIDED_SEARCH), True, False),
    # Extra row (not a default): the guided search once more for what even the guided fallback left.
    "difclue_search_last": (lambda cfg: DifCluE(retry_search="last"), True, False),
    # Extra row: the defaults of two releases before (4 rungs, unguided extension and centre
    # fallback, then the guided search and fallback again).
    "difclue_previous": (lambda cfg: DifCluE(max_decodes=4, unguided_rescue=True, retry_search=True,
                                             fallback="centre", **UNGUIDED_SEARCH), True, False),
    "dime": (lambda cfg: DiME(n_samples=cfg["n_samples"], **cfg["dime"]), False, True),
    "fastdime": (lambda cfg: FastDiME(n_samples=cfg["n_samples"], **cfg["fastdime"]), False, True),
    # The paper's comparator (not in the default list: ~11 min of traversal training per pair on a CPU).
    "dissect": (lambda cfg: DISSECT(n_concepts=cfg["n_modes"], **cfg.get("dissect", {})), "concepts", False),
}
"""The methods compared; a new one is one more line. The middle field is True (DifCluE's modes),
False (no modes) or "concepts" (unlabelled concepts, matched to the pair's classes afterwards)."""


def _oracle_reader(oracle):
    return lambda images: oracle.predict(images)


def method_metrics(e, oracle, pair_labels, mapping, reference_features, heldout, n_guided, uses_modes):
    """All figures of one explanation (see the module docstring)."""
    n, k = e.success.shape
    flat = e.counterfactuals.reshape((n * k,) + e.images.shape[1:])
    p_q = oracle.predict_proba(e.images)
    p_cf = oracle.predict_proba(flat).reshape(n, k, -1)
    read_q, read_cf = p_q.argmax(1), p_cf.argmax(2)
    a, b = pair_labels
    ok = e.success
    row = {
        "n_queries": int(n), "n_counterfactuals": int(n * k), "flip_rate": float(e.flip_rate),
        "shows_pair_class": {"either": float(np.isin(read_cf, pair_labels).mean()),
                             str(a): float(np.mean(read_cf == a)), str(b): float(np.mean(read_cf == b))},
        # MNAC on the oracle's 10 class probabilities as attributes (> 0.5): a clean change of
        # class counts 2, an unchanged class 0; over successful counterfactuals, as in DiME.
        "mnac": float(mnac(np.repeat(p_q[:, None], k, 1)[ok], p_cf[ok])) if ok.any() else None,
        "oracle_class_changed": float(np.mean(read_cf != read_q[:, None])),
        "oracle_proba_l1_change": float(np.abs(p_cf - p_q[:, None]).sum(-1).mean()),
        "sigma_L": float(diversity(e.counterfactuals)) if k > 1 else None,
        "n_function_evals": float(e.n_function_evals),
        "seconds_per_counterfactual": float(e.wall_time_s / (n * k)),
        "wall_time_s": float(e.wall_time_s),
    }
    if uses_modes:
        conv = evaluate_mode_conversion(e, _oracle_reader(oracle), mapping)
        row.update(percent_conversion=conv["percent_conversion"], l1=conv["l1"], mean_alpha=conv["mean_alpha"])
    else:
        row["l1"] = float(np.abs(e.counterfactuals - e.images[:, None]).mean())
    row["fid"] = _fid(flat[ok.reshape(-1)], reference_features, oracle, heldout)
    if not n_guided >= n:  # the same queries as the guided methods, for a like-for-like FID
        sub = e.success[:n_guided].reshape(-1)
        row["fid_guided_queries"] = _fid(e.counterfactuals[:n_guided].reshape((-1,) + e.images.shape[1:])[sub],
                                         reference_features, oracle, heldout)
    return row


def _fid(images, reference_features, oracle, heldout):
    """FID of ``images`` against the reference features, with the real-vs-real baseline at the same n.

    FID is biased upwards for small samples; the baseline (as many held-out real images as
    counterfactuals) tells what that bias alone gives.
    """
    n = len(images)
    if n < 2:
        return {"n": int(n), "fid": None, "real_baseline_same_n": None}
    fid = frechet_distance(reference_features, extract_features(images, oracle.module_))
    base = frechet_distance(reference_features, extract_features(heldout[:n], oracle.module_))
    return {"n": int(n), "fid": float(fid), "real_baseline_same_n": float(base)}


def real_references(queries, X_train, train_mode, modes, seed):
    """Real training images of each mode used as "counterfactuals" of the queries: the yardstick of
    the spread ratio (``edit_specificity``) and of the L1 distance to the query.

    ``random_member``: a random member of the mode per query (as diverse as the mode itself);
    ``nearest_member``: the member nearest to each query in pixel L1 (a retrieved, not an edited,
    counterfactual). Returns, per reference, the spread ratio and the mean L1 to the query
    (both in [0, 1] pixel units, averaged over the modes).
    """
    from skcfx.metrics import edit_specificity

    rng = np.random.default_rng(seed)
    q = queries.astype(np.float64) / 255.0
    flat_q = q.reshape(len(q), -1)
    out = {"random_member": {"spread_ratio": [], "l1": []}, "nearest_member": {"spread_ratio": [], "l1": []}}
    for m in modes:
        members = X_train[train_mode == m].astype(np.float64) / 255.0
        flat_m = members.reshape(len(members), -1)
        picks = {"random_member": members[rng.choice(len(members), len(q), replace=len(members) < len(q))],
                 # one query at a time: queries x members x pixels would not fit for a large mode
                 "nearest_member": members[[int(np.abs(flat_m - x).mean(axis=1).argmin()) for x in flat_q]]}
        for name, chosen in picks.items():
            out[name]["spread_ratio"].append(edit_specificity(q, chosen[:, None])["spread_ratio"])
            out[name]["l1"].append(float(np.abs(chosen - q).mean()))
    return {name: {k: float(np.mean(v)) for k, v in row.items()} for name, row in out.items()}


def run_pair(pair, models, data, cfg, methods, Z_train, log):
    """The protocol on one pair of garment classes; returns (results, explanations)."""
    names = data["names"]
    pair_labels = tuple(names.index(p) for p in pair)
    yb_train = mixed_class_labels(data["y_train"], pair_labels)
    yb_test = mixed_class_labels(data["y_test"], pair_labels)
    (classifier, clf_s, clf_cached), (independent, _, _) = pair_classifiers(cfg, pair, data["X_train"], yb_train)
    clf_acc = float(np.mean(classifier.predict(data["X_test"]) == yb_test))
    log(f"{pair}: classifier accuracy {clf_acc:.3f} ({clf_s:.0f} s{', cached' if clf_cached else ''})")
    independent_acc = float(np.mean(independent.predict(data["X_test"]) == yb_test))
    negatives = np.flatnonzero(yb_test == 0)
    queries = data["X_test"][negatives[: cfg["n_queries"]]]
    # Disjoint held-out images for FID: a reference set and real images for the baseline.
    rest = negatives[cfg["n_queries"]:]
    pool = np.concatenate([rest, np.flatnonzero(yb_test == 1)])
    pool = np.random.default_rng(cfg["seed"]).permutation(pool)
    heldout_pos = data["X_test"][pool[yb_test[pool] == 1]]
    # Counterfactuals should look like real positives: both FID sets are held-out positives.
    n_base = cfg["n_fid_baseline"]
    reference = heldout_pos[n_base:]
    baseline_images = heldout_pos[:n_base]
    reference_features = extract_features(reference, models["oracle"].module_)
    finder = ModalDirectionFinder(n_modes=cfg["n_modes"], random_state=cfg["seed"]).fit(Z_train, yb_train)
    mapping, recovery = mode_subclasses(finder, data["y_train"], class_label=1)
    log(f"{pair}: modes -> {mapping}, recovery {recovery}")
    results, explanations = {}, {}
    n_guided = min(cfg["n_guided_queries"], len(queries))
    for name in methods:
        factory, uses_modes, guided = METHODS[name]
        X_fit, y_fit = data["X_train"][: cfg["n_fit_explainer"]], yb_train[: cfg["n_fit_explainer"]]
        if not uses_modes:  # DiME / FastDiME learn nothing from the training set
            X_fit, y_fit = X_fit[:256], y_fit[:256]
        q = queries[:n_guided] if guided else queries
        start = time.perf_counter()
        explainer = CounterfactualExplainer(encoder=models["encoder"],
                                            direction_finder=finder if uses_modes is True else None,
                                            classifier=classifier, method=factory(cfg), random_state=cfg["seed"],
                                            batch_size=len(q)).fit(X_fit, y_fit)
        fit_s = time.perf_counter() - start
        e = explainer.explain(q, target_class=1)
        # Unlabelled concepts are named after the fact, by what the oracle reads in their counterfactuals.
        method_mapping = match_concepts(e, models["oracle"].predict, pair_labels) if uses_modes == "concepts" \
            else mapping
        row = method_metrics(e, models["oracle"], pair_labels, method_mapping, reference_features, baseline_images,
                             n_guided, uses_modes)
        row.update(edits_and_validity(e, independent.predict))
        if uses_modes == "concepts":
            row["concept_to_class"] = {str(c): int(v) for c, v in method_mapping.items()}
        row["explainer_fit_s"] = fit_s
        row["method"] = repr(factory(cfg))
        results[name] = row
        explanations[name] = e
        log(f"{pair} {name}: " + json.dumps({k: row.get(k) for k in ("percent_conversion", "flip_rate", "fid",
                                                                     "n_function_evals", "seconds_per_counterfactual")}))
    real_baseline = frechet_distance(reference_features, extract_features(baseline_images, models["oracle"].module_))
    references = real_references(queries, data["X_train"], finder.predict(Z_train), list(mapping), cfg["seed"])
    out = {"pair": list(pair), "pair_labels": list(pair_labels), "classifier_accuracy": clf_acc,
           "independent_accuracy": independent_acc, "independent_params": cfg["independent"],
           "classifier_fit_s": clf_s, "classifier_cached": clf_cached, "n_queries": int(len(queries)),
           "n_guided_queries": int(n_guided), "mode_to_class": {str(m): names[c] for m, c in mapping.items()},
           "mode_recovery": recovery, "fid_real_baseline": float(real_baseline), "n_fid_baseline": int(n_base),
           "n_fid_reference": int(len(reference)), "real_references": references, "methods": results}
    return out, explanations, mapping


def encoder_report(encoder, oracle, data, cfg):
    """Held-out reconstruction MSE ([-1, 1] units) and semantic control of the DiffAE."""
    X = data["X_test"][-200:]
    start = time.perf_counter()
    mse = -float(encoder.score(X))
    recon_s = time.perf_counter() - start
    control = semantic_control(encoder, _oracle_reader(oracle), data["X_test"][-1000:], data["y_test"][-1000:],
                               n_pairs=cfg["n_semantic_pairs"], seed=cfg["seed"])
    return {"reconstruction_mse_pm1": mse, "n_reconstructed": int(len(X)), "reconstruction_s": recon_s,
            "semantic_control": control, "n_parameters": int(sum(p.numel() for p in encoder.net_.parameters())),
            "n_steps": int(encoder.n_steps_), "fit_time_s": float(encoder.fit_time_s_),
            "final_loss_mean_last_100": float(np.mean(encoder.loss_history_[-100:])),
            "architecture": encoder.config_.to_dict(),
            "params": {k: v for k, v in encoder.get_params().items() if k != "checkpoint_path"}}


def save_figure(explanations, pairs, mappings, oracle, names, path, n_rows=5):
    """Queries and one counterfactual per mode (DifCluE defaults), both pairs side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = min([n_rows] + [e.n_queries for e in explanations])
    fig, axes = plt.subplots(n_rows, 3 * len(pairs), figsize=(1.35 * 3 * len(pairs), 1.45 * n_rows), squeeze=False)
    for j, (pair, e, mapping) in enumerate(zip(pairs, explanations, mappings)):
        order = np.argsort(e.mode_ids[0])
        for i in range(n_rows):
            cells = [(e.images[i], "query: " + names[int(oracle.predict(e.images[i:i + 1])[0])])]
            for slot in order:
                cf = e.counterfactuals[i, slot]
                read = names[int(oracle.predict(cf[None])[0])]
                mark = "" if e.success[i, slot] else " (no flip)"
                cells.append((cf, f"{read}{mark}"))
            for c, (image, title) in enumerate(cells):
                ax = axes[i, 3 * j + c]
                ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(title, fontsize=6)
                if i == 0 and c > 0:
                    ax.set_title(f"mode {names[mapping[int(e.mode_ids[0, order[c - 1]])]]}\n{title}", fontsize=6)
    fig.suptitle("DifCluE (library defaults) on Fashion-MNIST: query | counterfactual per mode "
                 "(titles: the oracle's reading)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def length_curve(cfg, checkpoints, log=print):
    """Semantic control and reconstruction of the DiffAE at the steps of saved training checkpoints.

    Each checkpoint (a copy of the ``.ckpt`` that ``--prepare`` keeps next to the cache file,
    taken while it trained) is turned into an encoder at its step (the EMA weights, as ``fit``
    would leave them) and measured like the protocol's DiffAE, with the cached oracle.
    """
    from skcfx.diffusion.train_state import load_train_checkpoint

    data = load_data(cfg)
    oracle, _, _ = cached_classifier(cfg, "oracle", data["X_train"], data["y_train"], cfg["seed"] + 1)
    rows = []
    for path in checkpoints:
        step = int(load_train_checkpoint(path).step)
        params = {**cfg["encoder"], "max_steps": step}
        encoder = DiffAEEncoder(random_state=cfg["seed"], checkpoint_path=str(path), **params).fit(data["X_train"])
        report = encoder_report(encoder, oracle, data, cfg)
        rows.append({"n_steps": step, **{k: report[k] for k in ("reconstruction_mse_pm1", "semantic_control",
                                                                "final_loss_mean_last_100")}})
        log(json.dumps(rows[-1]))
    return rows


def mode_recovery(cfg, log=print):
    """Mode recovery ARI of each pair under either clustering of ``ModalDirectionFinder`` (no decode)."""
    data = load_data(cfg)
    encoder, _ = load_encoder(cfg, data["X_train"], log)
    Z = encoder.transform(data["X_train"])
    rows = {}
    for pair in cfg["pairs"]:
        labels = mixed_class_labels(data["y_train"], tuple(data["names"].index(p) for p in pair))
        positive = labels == 1
        for clustering in ("kmeans", "gmm"):
            finder = ModalDirectionFinder(n_modes=cfg["n_modes"], clustering=clustering, random_state=cfg["seed"])
            finder.fit(Z, labels)
            ari = float(adjusted_rand_score(data["y_train"][positive], finder.labels_[positive]))
            rows[f"{' + '.join(pair)}: {clustering}"] = ari
            log(f"{pair} {clustering}: ARI {ari:.3f}")
    return {"n_steps": int(encoder.n_steps_), "ari": rows}


def pair_classifiers(cfg, pair, X, labels):
    """The explained classifier and the independent one of a pair, each ``(clf, fit_s, cached)``."""
    name = " + ".join(pair)
    return (cached_classifier(cfg, "classifier " + name, X, labels, cfg["seed"]),
            cached_classifier(cfg, "independent " + name, X, labels, cfg["seed"] + 2))


def prepare_classifiers(cfg, log=print):
    """Train and cache the oracle and both classifiers of every pair (what ``run`` reuses)."""
    data = load_data(cfg)
    _, fit_s, cached = cached_classifier(cfg, "oracle", data["X_train"], data["y_train"], cfg["seed"] + 1)
    log(f"oracle: {'cached' if cached else f'{fit_s:.0f} s'}")
    for pair in cfg["pairs"]:
        labels = mixed_class_labels(data["y_train"], tuple(data["names"].index(p) for p in pair))
        for role, (_, fit_s, cached) in zip(("classifier", "independent"),
                                            pair_classifiers(cfg, pair, data["X_train"], labels)):
            log(f"{role} {pair}: {'cached' if cached else f'{fit_s:.0f} s'}")


def run(cfg, methods, log=print, figure_path=None):
    start = time.perf_counter()
    data = load_data(cfg)
    if cfg.get("encoder_file"):
        encoder = DiffAEEncoder.load(cfg["encoder_file"])
        enc_info = {"n_steps": int(encoder.n_steps_), "from_cache": True, "path": str(cfg["encoder_file"])}
        meta = os.path.splitext(cfg["encoder_file"])[0] + ".json"  # its training time, when saved beside it
        if os.path.isfile(meta):
            enc_info.update({k: v for k, v in json.loads(open(meta).read()).items() if k != "n_steps"})
    else:
        encoder, enc_info = load_encoder(cfg, data["X_train"], log)
    oracle, oracle_s, oracle_cached = cached_classifier(cfg, "oracle", data["X_train"], data["y_train"],
                                                        cfg["seed"] + 1)
    oracle_acc = float(np.mean(oracle.predict(data["X_test"]) == data["y_test"]))
    log(f"oracle accuracy {oracle_acc:.3f} ({oracle_s:.0f} s)")
    enc_report = encoder_report(encoder, oracle, data, cfg)
    log(f"encoder: {json.dumps({k: enc_report[k] for k in ('reconstruction_mse_pm1', 'semantic_control', 'n_steps')})}")
    Z_train = encoder.transform(data["X_train"])
    runs, explanations, mappings = [], [], []
    for pair in cfg["pairs"]:
        out, e, mapping = run_pair(pair, {"encoder": encoder, "oracle": oracle}, data, cfg, methods, Z_train, log)
        runs.append(out)
        explanations.append(e.get("difclue"))
        mappings.append(mapping)
    if figure_path is not None and all(e is not None for e in explanations):
        save_figure(explanations, cfg["pairs"], mappings, oracle, data["names"], figure_path)
        log(f"wrote {figure_path}")
    summary = {}
    for name in methods:
        rows = [r["methods"][name] for r in runs]
        pc = [r["percent_conversion"]["mean"] for r in rows if "percent_conversion" in r]
        summary[name] = {
            "percent_conversion_mean": float(np.mean(pc)) if pc else None,
            "flip_rate": float(np.mean([r["flip_rate"] for r in rows])),
            "fid": _mean([r["fid"]["fid"] for r in rows]),
            "n_function_evals": float(np.mean([r["n_function_evals"] for r in rows])),
            "seconds_per_counterfactual": float(np.mean([r["seconds_per_counterfactual"] for r in rows])),
        }
    settings = {k: v for k, v in cfg.items()}
    settings["methods"] = list(methods)
    return {"settings": settings, "oracle": {"accuracy": oracle_acc, "fit_s": oracle_s, "cached": oracle_cached,
                                             "params": cfg["oracle"], "n_classes": 10},
            "encoder": {**enc_info, **enc_report}, "runs": runs, "summary": summary,
            "total_time_s": time.perf_counter() - start}


def _f(value, digits=2):
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def readme_lines(result):
    """Markdown table of the main figures, one row per pair and method (all from this JSON)."""
    lines = ["| pair | method | queries | percent conversion per mode (mean) | flip rate | independent validity "
             "| FID (real-vs-real, same n) | FID on the guided methods' queries | MNAC | oracle class changed "
             "| sigma_L | spread ratio (flipped) | L1 | NFE / CF | s / CF |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        names = {str(lab): nm for lab, nm in zip(run["pair_labels"], run["pair"])}
        for name, row in run["methods"].items():
            if "percent_conversion" in row:
                pc = row["percent_conversion"]
                conv = " / ".join(f"{names.get(k, k)} {_f(v)}" for k, v in pc["per_mode"].items()) + f" ({_f(pc['mean'])})"
            else:
                shown = row["shows_pair_class"]
                conv = "no modes; shows " + " / ".join(f"{names[k]} {_f(shown[k])}" for k in names)
            fid, fid_g = row["fid"], row.get("fid_guided_queries", row["fid"])
            lines.append(
                f"| {' / '.join(run['pair'])} | {name} | {row['n_queries']} | {conv} | {_f(row['flip_rate'])} | "
                f"{_f(row.get('independent_validity'))} | "
                f"{_f(fid['fid'], 1)} ({_f(fid['real_baseline_same_n'], 1)}, n={fid['n']}) | "
                f"{_f(fid_g['fid'], 1)} ({_f(fid_g['real_baseline_same_n'], 1)}, n={fid_g['n']}) | {_f(row['mnac'])} | "
                f"{_f(row['oracle_class_changed'])} | {_f(row['sigma_L'], 3)} | "
                f"{_f(row.get('spread_ratio_flipped'))} | {_f(row['l1'], 3)} | "
                f"{row['n_function_evals']:.0f} | {_f(row['seconds_per_counterfactual'])} |")
        for name, ref in run.get("real_references", {}).items():  # real images as the yardstick
            lines.append(f"| {' / '.join(run['pair'])} | real {name.replace('_', ' ')} | {run['n_queries']} | "
                         f"| | | | | | | | {_f(ref['spread_ratio'])} | {_f(ref['l1'], 3)} | | |")
    return lines


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# Candidates timed by --time-architectures (28 px, batch 64): the default and two alternatives.
CANDIDATES = {
    "auto (default)": "auto",
    "width 16, 3 levels": dict(model_channels=16, channel_mult=(1, 1, 1), enc_channel_mult=(1, 1, 2, 2),
                               attention_resolutions=(7,), embed_channels=64, latent_dim=32),
    "width 32, 2 levels": dict(model_channels=32, channel_mult=(1, 1), enc_channel_mult=(1, 2, 2),
                               attention_resolutions=(14,), embed_channels=64, latent_dim=32),
}


def time_architectures(cfg, X, n_steps=20):
    """Seconds per training step of each candidate network (what a fixed time budget buys)."""
    rows = {}
    for name, arch in CANDIDATES.items():
        enc = DiffAEEncoder(architecture=arch, max_steps=n_steps, batch_size=cfg["encoder"]["batch_size"],
                            random_state=cfg["seed"])
        start = time.perf_counter()
        enc.fit(X[:2000])
        rows[name] = {"seconds_per_step": (time.perf_counter() - start) / n_steps, "n_steps": n_steps,
                      "n_parameters": int(sum(p.numel() for p in enc.net_.parameters())),
                      "architecture": enc.config_.to_dict()}
        print(name, rows[name]["seconds_per_step"], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true", help="only train and cache the DiffAE")
    parser.add_argument("--prepare-classifiers", action="store_true",
                        help="only train and cache the oracle and each pair's explained and independent "
                             "classifiers (can run beside --prepare)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    parser.add_argument("--train-budget-min", type=float, default=None)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train the DiffAE to this many steps (default FULL['encoder']['max_steps']); "
                             "not part of the cache key, so a later call with more steps goes on")
    parser.add_argument("--length-curve", nargs="+", default=None, metavar="CKPT",
                        help="only measure semantic control at the steps of these copies of the training checkpoint")
    parser.add_argument("--mode-recovery", action="store_true",
                        help="only score how either clustering recovers each pair's two classes (ARI)")
    parser.add_argument("--time-architectures", action="store_true",
                        help="only time a training step of the candidate DiffAE networks")
    parser.add_argument("--methods", nargs="+", default=["difclue", "paper_alpha", "dime", "fastdime"],
                        choices=list(METHODS))
    parser.add_argument("--n-queries", type=int, default=None)
    parser.add_argument("--n-guided-queries", type=int, default=None)
    parser.add_argument("--pairs", nargs="+", default=None, help='e.g. "Ankle boot,T-shirt/top"')
    parser.add_argument("--name", default=None, help="JSON name (default fashion_protocol[_quick])")
    parser.add_argument("--encoder-file", default=None,
                        help="run the protocol on this saved DiffAE instead of the cached one (e.g. "
                             "benchmarks/checkpoints/fashion_encoder_28px_10000steps.pt, the 10000-step one)")
    args = parser.parse_args()
    cfg = copy.deepcopy(QUICK if args.quick else FULL)
    cfg["pairs"] = [tuple(p.split(",")) for p in args.pairs] if args.pairs else [list(p) for p in PAIRS]
    for key in ("train_budget_min", "n_queries", "n_guided_queries"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.max_steps is not None:
        cfg["encoder"]["max_steps"] = args.max_steps
    if args.time_architectures:
        write_json("fashion_diffae_timing", {"rows": time_architectures(cfg, load_data(cfg)["X_train"]),
                                             "note": "one torch thread on the shared 2-core CPU, other jobs running"})
        return
    if args.prepare:
        load_encoder(cfg, load_data(cfg)["X_train"], train_more=True)
        return
    if args.prepare_classifiers:
        prepare_classifiers(cfg)
        return
    if args.mode_recovery:
        write_json("fashion_modes", {"settings": {k: cfg[k] for k in ("n_train", "seed", "n_modes")},
                                     **mode_recovery(cfg)})
        return
    if args.length_curve:
        rows = length_curve(cfg, args.length_curve)
        earlier = RESULTS / "fashion_diffae_length.json"
        if earlier.is_file():  # the rows of other lengths measured earlier stay
            new_steps = {r["n_steps"] for r in rows}
            rows += [r for r in json.loads(earlier.read_text())["rows"] if r["n_steps"] not in new_steps]
        settings = {k: cfg[k] for k in ("n_train", "seed", "encoder")}
        settings["encoder"] = {k: v for k, v in settings["encoder"].items() if k != "max_steps"}
        write_json("fashion_diffae_length", {"settings": settings, "rows": sorted(rows, key=lambda r: r["n_steps"])})
        return
    name = args.name or ("fashion_protocol_quick" if args.quick else "fashion_protocol")
    figure = CACHE / "fashion_protocol_quick.png" if args.quick else RESULTS / f"{name}.png"
    cfg["encoder_file"] = args.encoder_file
    result = run(cfg, args.methods, log=lambda m: print(m, flush=True), figure_path=figure)
    result["readme_lines"] = readme_lines(result)
    write_json(name, result)
    print("\n".join(result["readme_lines"]))


if __name__ == "__main__":
    main()
