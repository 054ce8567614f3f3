"""DifCluE's options side by side on the shapes protocol (``shapes_protocol.py --cpu`` models).

The protocol itself runs every method once; this script holds its DiffAE, classifier, oracle and
queries fixed and varies only DifCluE's step search, to say which option moves what. The DiffAE
comes from the protocol's cache (trained there, ~30 min on a 2-core CPU, if absent); the
classifier and the oracle are trained once and cached next to it. Per variant: flip rate (all,
negatives, positives; positives by sub-class), percent conversion per mode, FID on the oracle's
features, denoiser calls and the search's acceptance and fallback rates. Once per DiffAE: its
semantic control of the positive class's two attributes (``_common.semantic_control``).

    python benchmarks/shapes_difclue_variants.py                 # every variant (~5 min cached)
    python benchmarks/shapes_difclue_variants.py --variants default,no_extension
    python benchmarks/shapes_difclue_variants.py --encoder-steps 8000 --output shapes_difclue_variants_8000
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np

import shapes_protocol as sp
from _common import CACHE, UNGUIDED_SEARCH, flipped_edit_specificity, load_or_fit, semantic_control, write_json
from skcfx import CounterfactualExplainer, ModalDirectionFinder
from skcfx.classifiers import TimmClassifier
from skcfx.methods import DifCluE
from skcfx.metrics import extract_features, frechet_distance
from skcfx.protocols import attribute_proba, fit_attribute_oracle, mode_subclasses

VARIANTS = {
    "default": dict(),
    # the defaults of the release before: an unguided ladder, then the fully guided local fallback
    "unguided_search": dict(**UNGUIDED_SEARCH),
    # guidance on every decode in other intervals of t / T than the default's (0.1, 0.6)
    "interval_0.2_0.6": dict(guidance_interval=(0.2, 0.6)),
    "interval_noisiest_half": dict(guidance_interval=0.5),
    # the defaults of two releases before (4 rungs, unguided extension and centre fallback, guided re-search)
    "previous_default": dict(max_decodes=4, unguided_rescue=True, retry_search=True, fallback="centre",
                             **UNGUIDED_SEARCH),
    "no_extension": dict(extend_decodes=0, **UNGUIDED_SEARCH),
    "scan_alone": dict(extend_decodes=0, fallback=None, **UNGUIDED_SEARCH),
    "bracket": dict(search="bracket", fallback=None, **UNGUIDED_SEARCH),
    "bracket_fallback": dict(search="bracket", **UNGUIDED_SEARCH),
    "decode_20": dict(decode_steps=None),
    "guidance_3": dict(guidance_scale=3.0, guidance_interval=1.0),
    # no latent guidance at all (what an encoder without a null latent gets)
    "no_retry": dict(guidance_scale=0.0, retry_guidance=0.0),
    "previous_no_retry": dict(max_decodes=4, fallback="centre", guidance_scale=0.0, retry_guidance=0.0),
    "retry_fallback": dict(retry_search=False, unguided_rescue=True, max_decodes=4, fallback="centre",
                           **UNGUIDED_SEARCH),
    "direct_retry_3": dict(max_decodes=3, extend_decodes=0, retry_search=False, unguided_rescue=False,
                           **UNGUIDED_SEARCH),
    "direct_local_3": dict(max_decodes=3, retry_search=False, unguided_rescue=False, fallback="local",
                           **UNGUIDED_SEARCH),
    "local_3_no_retry": dict(max_decodes=3, fallback="local", guidance_scale=0.0, retry_guidance=0.0),
    "direct_retry_4": dict(extend_decodes=0, retry_search=False, unguided_rescue=False, **UNGUIDED_SEARCH),
    "guidance_2": dict(guidance_scale=2.0, guidance_interval=1.0, retry_guidance=0.0),
    "guidance_2_half": dict(guidance_scale=2.0, guidance_interval=0.5, retry_guidance=0.0),
    "paper_direction": dict(contrast="rest"),
    "no_mode_check": dict(require_mode=False),
}


def load_models(cfg, task, device):
    encoder, _ = sp._cached_encoder(cfg, device, task["X_train"])
    X, y = task["X_train"], task["y_train"]
    classifier, _ = load_or_fit(CACHE / "shapes_variants_classifier.joblib", lambda: TimmClassifier(
        device=device, random_state=cfg["seed"], **cfg["classifier"]).fit(X, y))
    oracle, _ = load_or_fit(CACHE / "shapes_variants_oracle.joblib", lambda: fit_attribute_oracle(
        X, task["attr_train"], device=device, random_state=cfg["seed"] + 1, **cfg["oracle"]))
    return encoder, classifier, oracle


def score(e, explainer, task, split, cfg, oracle, reference):
    n_neg = cfg["n_queries"]
    names = task["names"]
    ctx = {"n_neg": n_neg, "ia": names.index(task["a"]), "ib": names.index(task["b"]), "names": names}
    mapping, recovery = mode_subclasses(explainer.direction_finder_, task["sub_train"], class_label=1)
    n, k = e.success.shape
    oracle_cf = attribute_proba(oracle, e.counterfactuals.reshape((n * k,) + e.images.shape[1:])).reshape(n, k, -1)
    pc = sp._percent_conversion(e, oracle_cf[:n_neg], ctx, mapping)
    qi, kj = np.nonzero(e.success)
    sub_pos = task["sub_test"][split["queries"]][n_neg:]
    return {
        "flip_rate": float(e.flip_rate),
        "flip_rate_negatives": float(e.success[:n_neg].mean()),
        "flip_rate_positives": float(e.success[n_neg:].mean()),
        "flip_rate_positives_by_subclass": {task[{1: "a", 2: "b"}[int(v)]]: float(e.success[n_neg:][sub_pos == v].mean())
                                            for v in np.unique(sub_pos)},
        "percent_conversion": pc,
        "fid": float(frechet_distance(reference, extract_features(e.counterfactuals[qi, kj], oracle)))
        if qi.size > 2 else None,
        "n_function_evals": float(e.n_function_evals),
        "mean_alpha": float(np.mean(e.alphas)),
        "mode_recovery_ari": recovery.get("ari"),
        **flipped_edit_specificity(e),
        "info": {key: v for key, v in e.info.items() if isinstance(v, (int, float))},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated names of {list(VARIANTS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder-steps", type=int, default=None,
                        help=f"DiffAE training steps (default {sp.CPU['encoder']['max_steps']}, the protocol's)")
    parser.add_argument("--output", default="shapes_difclue_variants", help="JSON name in benchmarks/results/")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    t0 = time.perf_counter()
    cfg = copy.deepcopy(sp.CPU)
    cfg["cache"] = True
    if args.encoder_steps is not None:  # the classifier and oracle stay the same (their cache ignores it)
        cfg["encoder"]["max_steps"] = args.encoder_steps
    task = sp.make_task(cfg)
    encoder, classifier, oracle = load_models(cfg, task, args.device)
    split = sp.split_test(task, cfg["n_queries"], 2 * cfg["n_queries"] * cfg["n_samples"])
    queries = task["X_test"][split["queries"]]
    targets = 1 - task["y_test"][split["queries"]]
    reference = extract_features(task["X_test"][split["reference"]], oracle)
    rows = {}
    for name in names:
        start = time.perf_counter()
        explainer = CounterfactualExplainer(
            encoder=encoder, classifier=classifier, method=DifCluE(**VARIANTS[name]),
            direction_finder=ModalDirectionFinder(n_modes=cfg["n_modes"], random_state=cfg["seed"]),
            random_state=cfg["seed"], batch_size=len(queries)).fit(task["X_train"], task["y_train"])
        e = explainer.explain(queries, target_class=targets)
        rows[name] = {"params": VARIANTS[name], **score(e, explainer, task, split, cfg, oracle, reference),
                      "seconds": time.perf_counter() - start}
        r = rows[name]
        print(f"{name}: flip {r['flip_rate']:.3f} (neg {r['flip_rate_negatives']:.3f} / pos "
              f"{r['flip_rate_positives']:.3f}), conversion {r['percent_conversion']['mean']:.3f}, "
              f"FID {r['fid']:.1f}, NFE {r['n_function_evals']:.1f}, spread {r['spread_ratio_flipped']:.2f}",
              flush=True)
    # Does the latent decide the positive class's attributes, or the inverted noise? (DifCluE edits
    # only the latent: an attribute the noise decides cannot be changed by it.)
    control = {}
    for name in (task["a"], task["b"]):
        j = task["names"].index(name)
        control[name] = semantic_control(encoder, lambda images, j=j: attribute_proba(oracle, images)[:, j] > 0.5,
                                         task["X_test"], task["attr_test"][name], seed=cfg["seed"])
        print(f"semantic control {name}: {control[name]}", flush=True)
    write_json(args.output, {
        "settings": {"protocol": "shapes_protocol.py --cpu models", "n_queries_per_class": cfg["n_queries"],
                     "encoder_steps": int(encoder.n_steps_),
                     "classifier_accuracy": float(np.mean(classifier.predict(task["X_test"]) == task["y_test"]))},
        "semantic_control": control, "variants": rows, "wall_time_s": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
