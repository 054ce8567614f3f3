"""Benchmark: DifCluE's mixed-class protocol on many digit pairs, with variants, in one run.

Two digits form the positive class (e.g. 1 and 7); every other digit is negative. Held-out
negatives are explained towards each mode of the positive class, with ONE DiffAE for every pair
(the shipped pretrained ``digits16``, via ``_common.cached_encoder``). Per pair: a classifier to
explain (timm, cached under ``SKCFX_BENCH_CACHE``), an independent classifier that never takes
part in generating (an MLP on pixels, another architecture and seed), and the oracle of the
protocol (an SVC on pixels trained on the 10 digit labels) that decides whether mode k's
counterfactual shows digit k ("percent conversion", DifCluE paper).

Reported per pair and variant: percent conversion (per mode and mean), flip rate, independent
validity (share of flipped counterfactuals the independent classifier also assigns to the
target), edit specificity (spread of a mode's counterfactuals across queries over the queries'
spread; share nearer their own query than the mode's mean counterfactual), how far the
counterfactuals lie from the data (mean distance to the nearest training image over the same
for the queries: 1 = as near as real held-out digits; also for the counterfactuals that did not
flip), mode recovery ARI, denoiser calls. Summaries over pairs: mean, min (worst pair named),
max.

Variants live in ``VARIANTS`` (name -> ``n_modes`` and a factory of whatever
``CounterfactualExplainer(method=...)`` accepts), so another method is one more line. A variant
with ``concepts=True`` (the ``dissect`` row, the DifCluE paper's comparator) learns unlabelled
concepts instead of using the modes: each concept is named after the digit its counterfactuals
show most (``skcfx.protocols.match_concepts``, one to one), and mode recovery does not apply.

    python benchmarks/difclue_digits.py --pairs random 12 --n-queries 30 --variants difclue,mode_bound_0.05
    python benchmarks/difclue_digits.py --pairs 1,7 0,6 --n-queries 100 --classifier resnet18:15
    python benchmarks/difclue_digits.py --pairs all
"""

import argparse
import itertools
import json
import time

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

from _common import (CACHE, RESULTS, UNGUIDED_SEARCH, add_encoder_args, cached_encoder, digits_split,
                     edits_and_validity, encoder_overrides, load_or_fit, write_json)
from skcfx import CounterfactualExplainer, ModalDirectionFinder
from skcfx.classifiers import TimmClassifier
from skcfx.methods import DISSECT, DifCluE
from skcfx.metrics import edit_specificity
from skcfx.protocols import evaluate_mode_conversion, match_concepts, mixed_class_labels, mode_subclasses

BENCHMARK_PAIRS = [(1, 7), (0, 6)]

VARIANTS = {
    "difclue": dict(n_modes=2, method=lambda: DifCluE()),
    "mode_bound_0.05": dict(n_modes=2, method=lambda: DifCluE(mode_bound=0.05)),
    "scan": dict(n_modes=2, method=lambda: DifCluE(search="scan")),
    "scan_mode_bound_0.05": dict(n_modes=2, method=lambda: DifCluE(search="scan", mode_bound=0.05)),
    "scan_margin_1": dict(n_modes=2, method=lambda: DifCluE(search="scan", margin=1.0)),
    "mode_bound_0": dict(n_modes=2, method=lambda: DifCluE(mode_bound=0.0)),
    "confidence_0.5": dict(n_modes=2, method=lambda: DifCluE(target_confidence=0.5)),
    "overshoot_1.3": dict(n_modes=2, method=lambda: DifCluE(overshoot=1.3)),
    "paper_direction": dict(n_modes=2, method=lambda: DifCluE(contrast="rest")),
    "no_mode_check": dict(n_modes=2, method=lambda: DifCluE(require_mode=False)),
    "paper_direction_no_mode_check": dict(n_modes=2, method=lambda: DifCluE(contrast="rest", require_mode=False)),
    "guidance_1": dict(n_modes=2, method=lambda: DifCluE(guidance_scale=1.0, guidance_interval=1.0, max_decodes=2)),
    # Latent guidance on every decode step, or on the noisiest half only (half the extra cost),
    # and no guided retry (the rows of the release that guided the retry only).
    "guidance_2": dict(n_modes=2, method=lambda: DifCluE(guidance_scale=2.0, guidance_interval=1.0,
                                                        retry_guidance=0.0)),
    "guidance_2_half": dict(n_modes=2, method=lambda: DifCluE(guidance_scale=2.0, guidance_interval=0.5,
                                                             retry_guidance=0.0)),
    # No latent guidance at all (what an encoder without a null latent gets).
    "no_retry": dict(n_modes=2, method=lambda: DifCluE(guidance_scale=0.0, retry_guidance=0.0)),
    "retry_fallback": dict(n_modes=2, method=lambda: DifCluE(retry_search=False, unguided_rescue=True, max_decodes=4,
                                                            fallback="centre", **UNGUIDED_SEARCH)),
    # the defaults of two releases before: 4 rungs, unguided extension and centre fallback, guided re-search
    "previous_default": dict(n_modes=2, method=lambda: DifCluE(max_decodes=4, unguided_rescue=True, retry_search=True,
                                                              fallback="centre", **UNGUIDED_SEARCH)),
    # What a 3-rung ladder could not get accepted goes straight to the guided fallback (no unguided
    # extension, fallback or re-search): the cheapest escalation, measured for Fashion-MNIST's cost goal.
    "direct_retry_3": dict(n_modes=2, method=lambda: DifCluE(max_decodes=3, extend_decodes=0, retry_search=False,
                                                            unguided_rescue=False, **UNGUIDED_SEARCH)),
    # ... with the 'local' fallback (the mean of the query's nearest half of the mode, then the
    # centre): the defaults of the release before (an unguided ladder, fully guided fallback)
    "direct_local_3": dict(n_modes=2, method=lambda: DifCluE(max_decodes=3, retry_search=False, unguided_rescue=False,
                                                            fallback="local", **UNGUIDED_SEARCH)),
    # the same ladder and fallback for an encoder without a null latent (no guidance at all)
    "local_3_no_retry": dict(n_modes=2, method=lambda: DifCluE(max_decodes=3, fallback="local", guidance_scale=0.0,
                                                              retry_guidance=0.0)),
    "direct_retry_4": dict(n_modes=2, method=lambda: DifCluE(extend_decodes=0, retry_search=False,
                                                            unguided_rescue=False, **UNGUIDED_SEARCH)),
    # Guidance on every decode in other intervals of t / T than the default's (0.1, 0.6).
    "interval_0.2_0.6": dict(n_modes=2, method=lambda: DifCluE(guidance_interval=(0.2, 0.6))),
    "interval_noisiest_half": dict(n_modes=2, method=lambda: DifCluE(guidance_interval=0.5)),
    "fixed_alpha_0.5": dict(n_modes=2, method=lambda: DifCluE(alpha=0.5, contrast="rest")),
    "fixed_alpha_1": dict(n_modes=2, method=lambda: DifCluE(alpha=1.0, contrast="rest")),
    "fixed_alpha_2": dict(n_modes=2, method=lambda: DifCluE(alpha=2.0, contrast="rest")),
    "one_direction": dict(n_modes=1, method=lambda: DifCluE()),
    # Failed searches walk towards the mode's nearest training latent / its mean (2 extra decodes).
    "fallback_nearest": dict(n_modes=2, method=lambda: DifCluE(fallback="nearest")),
    "fallback_centre": dict(n_modes=2, method=lambda: DifCluE(fallback="centre")),
    "fallback_centre_4": dict(n_modes=2, method=lambda: DifCluE(fallback="centre", fallback_decodes=4)),
    # the scan's ladder, then up to 2 doublings for what it could not get accepted (before the fallback)
    "extend_2": dict(n_modes=2, method=lambda: DifCluE(extend_decodes=2)),
    "extend_3": dict(n_modes=2, method=lambda: DifCluE(extend_decodes=3)),
    "scan_no_fallback": dict(n_modes=2, method=lambda: DifCluE(fallback=None)),
    "no_extension": dict(n_modes=2, method=lambda: DifCluE(extend_decodes=0)),
    # Edits through part of the chain only (DifCluE(edit_depth=...)): the query's low-noise trajectory kept.
    "depth_0.7": dict(n_modes=2, method=lambda: DifCluE(edit_depth=0.7)),
    "depth_0.5": dict(n_modes=2, method=lambda: DifCluE(edit_depth=0.5)),
    # The modes from either clustering of ModalDirectionFinder (whatever its default), DifCluE's defaults.
    "kmeans": dict(n_modes=2, finder=dict(clustering="kmeans"), method=lambda: DifCluE()),
    "gmm": dict(n_modes=2, finder=dict(clustering="gmm"), method=lambda: DifCluE()),
    # DISSECT at the setting dissect_compare.py tuned on 1/7 (its DISSECT_BASE): ~5 min per pair on a CPU.
    "dissect": dict(n_modes=2, concepts=True, method=lambda: DISSECT(n_concepts=2, n_steps=300, batch_size=16,
                                                                     decode_steps=10, checkpoint=False)),
}
DEFAULT_VARIANTS = "difclue,mode_bound_0.05,confidence_0.5,paper_direction,fixed_alpha_2"
# The table of the two benchmark pairs (resnet18, 100 queries), as in the README.
BENCHMARK_VARIANTS = ("difclue,paper_direction,no_mode_check,paper_direction_no_mode_check,overshoot_1.3,"
                      "guidance_1,fixed_alpha_0.5,fixed_alpha_1,fixed_alpha_2,one_direction,mode_bound_0.05")


def parse_pairs(tokens, seed):
    """``all`` | ``random N`` | explicit ``a,b`` tokens; a random subset always holds the benchmark pairs."""
    everything = list(itertools.combinations(range(10), 2))
    if tokens == ["all"]:
        return everything
    if tokens and tokens[0] == "random":
        n = int(tokens[1])
        rest = [p for p in everything if p not in BENCHMARK_PAIRS]
        order = np.random.default_rng(seed).permutation(len(rest))
        return BENCHMARK_PAIRS + [rest[i] for i in order[: max(n - len(BENCHMARK_PAIRS), 0)]]
    return [tuple(int(d) for d in p.split(",")) for p in tokens]


def explained_classifier(X_train, yb_train, pair, recipe):
    """The classifier to explain for one pair, trained once and cached (joblib)."""
    model_name, epochs = recipe.split(":")
    path = CACHE / f"difclue_pairs_clf_{model_name}_{epochs}_{pair[0]}{pair[1]}.joblib"
    clf, fit_s = load_or_fit(path, lambda: TimmClassifier(model_name=model_name, max_epochs=int(epochs), batch_size=64,
                                                          random_state=0).fit(X_train, yb_train))
    if fit_s is None:
        return clf, {"cached": True, "path": str(path)}
    return clf, {"cached": False, "path": str(path), "fit_s": fit_s}


def nearest_distance(images, reference):
    """Per image, the RMS pixel distance to the nearest reference image."""
    a, b = images.reshape(len(images), -1), reference.reshape(len(reference), -1)
    return cdist(a, b).min(axis=1) / np.sqrt(a.shape[1])


def run_pair(pair, encoder, oracle, data, Z_train, args):
    X_train, X_test, y_train, y_test = data
    yb_train, yb_test = mixed_class_labels(y_train, pair), mixed_class_labels(y_test, pair)
    classifier, clf_info = explained_classifier(X_train, yb_train, pair, args.classifier)
    clf_acc = float(np.mean(classifier.predict(X_test) == yb_test))
    flat = lambda im: im.reshape(len(im), -1)  # noqa: E731
    independent = MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, random_state=1).fit(flat(X_train), yb_train)
    indep_acc = float(independent.score(flat(X_test), yb_test))
    queries = X_test[yb_test == 0][: args.n_queries]
    query_nn = float(nearest_distance(queries, X_train).mean())
    results = {}
    for name in args.variants:
        spec = VARIANTS[name]
        t0 = time.perf_counter()
        concepts = spec.get("concepts", False)
        finder = None
        if not concepts:
            finder = ModalDirectionFinder(n_modes=spec["n_modes"], random_state=0, **spec.get("finder", {}))
            finder.fit(Z_train, yb_train)
            mapping, recovery = mode_subclasses(finder, y_train, class_label=1)
        explainer = CounterfactualExplainer(encoder=encoder, direction_finder=finder, classifier=classifier,
                                            method=spec["method"](), random_state=0).fit(X_train, yb_train)
        explanation = explainer.explain(queries, target_class=1)
        cfs = explanation.counterfactuals
        n, k = explanation.success.shape
        oracle_predict = lambda im: oracle.predict(flat(im))  # noqa: E731
        if concepts:  # unlabelled concepts: named by what they show; no clustering to recover
            mapping, recovery = match_concepts(explanation, oracle_predict, pair), {"ari": None, "nmi": None}
        m = evaluate_mode_conversion(explanation, oracle_predict, mapping)
        if spec["n_modes"] == 1:
            pred = oracle.predict(flat(cfs.reshape((n * k,) + cfs.shape[2:])))
            m["shows_digit"] = {str(d): float(np.mean(pred == d)) for d in pair}
        cf_flat = cfs.reshape((n * k,) + cfs.shape[2:])
        spec_res = edit_specificity(queries, cfs, explanation.mode_ids)
        m["spread_ratio"], m["closer_to_query"] = spec_res["spread_ratio"], spec_res["closer_to_query"]
        # Independent validity, and specificity on the flipped counterfactuals only: failed ones
        # (often off the data, far apart) inflate the spread of a method that fails more.
        m.update(edits_and_validity(explanation, lambda images: independent.predict(flat(images))))
        nn = nearest_distance(cf_flat, X_train).reshape(n, k)
        m["nn_ratio"] = float(nn.mean() / query_nn)
        failed = ~explanation.success
        m["nn_ratio_failed"] = float(nn[failed].mean() / query_nn) if failed.any() else None
        m["n_failed"] = int(failed.sum())
        m["accepted_rate"] = explanation.info.get("accepted_rate")
        m["fallback_rate"] = explanation.info.get("fallback_rate")
        m["mode_recovery"] = recovery
        m["mode_to_digit"] = {str(key): v for key, v in mapping.items()}
        # Seconds the method spent learning (DISSECT's traversal training; DifCluE's is negligible).
        m["method_fit_s"] = float(getattr(explainer.method_, "fit_time_s_", 0.0))
        m["wall_time_s"] = time.perf_counter() - t0
        results[name] = m
        print(pair, name, {key: round(m[key], 3) for key in ("flip_rate", "independent_validity", "spread_ratio",
                                                             "closer_to_query", "nn_ratio")},
              "pc", round(m["percent_conversion"]["mean"], 3), "ari", recovery["ari"] and round(recovery["ari"], 3),
              f"{m['wall_time_s']:.0f}s", flush=True)
    return {"pair": list(pair), "classifier_accuracy": clf_acc, "classifier": clf_info,
            "independent_accuracy": indep_acc, "n_queries": len(queries), "query_nn_distance": query_nn,
            "variants": results}


def _conversion(m):
    if "shows_digit" in m:  # one direction: how often its single counterfactual shows each digit
        return float(np.mean(list(m["shows_digit"].values())))
    return m["percent_conversion"]["mean"]


SUMMARY_KEYS = {
    "percent_conversion": _conversion,
    "flip_rate": lambda m: m["flip_rate"],
    "independent_validity": lambda m: m["independent_validity"],
    "spread_ratio": lambda m: m["spread_ratio"],
    "spread_ratio_flipped": lambda m: m.get("spread_ratio_flipped"),
    "closer_to_query_flipped": lambda m: m.get("closer_to_query_flipped"),
    "closer_to_query": lambda m: m["closer_to_query"],
    "nn_ratio": lambda m: m["nn_ratio"],
    "nn_ratio_failed": lambda m: m["nn_ratio_failed"],
    "mode_recovery_ari": lambda m: m["mode_recovery"]["ari"],
    "n_function_evals": lambda m: m["n_function_evals"],
    "l1": lambda m: m["l1"],
}


def summarise(runs):
    """Per variant and figure: mean, std, min (with its pair), max over pairs."""
    summary = {}
    for name in runs[0]["variants"]:
        summary[name] = {}
        for key, get in SUMMARY_KEYS.items():
            vals = [(get(r["variants"][name]), r["pair"]) for r in runs]
            vals = [(v, p) for v, p in vals if v is not None and np.isfinite(v)]
            if not vals:
                continue
            x = np.array([v for v, _ in vals])
            lo, hi = int(np.argmin(x)), int(np.argmax(x))
            summary[name][key] = {"mean": float(x.mean()), "std": float(x.std()), "min": float(x[lo]),
                                  "min_pair": vals[lo][1], "max": float(x[hi]), "max_pair": vals[hi][1],
                                  "n_pairs": len(x)}
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["random", "12"],
                        help="'all', 'random N' (always with 1,7 and 0,6), or explicit pairs like 1,7 0,6")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pair subset")
    parser.add_argument("--n-queries", type=int, default=30)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated names of {list(VARIANTS)}, 'all' or 'benchmark'")
    parser.add_argument("--classifier", default="resnet10t:5", help="timm model:epochs of the explained classifier")
    add_encoder_args(parser)
    parser.add_argument("--output", default="difclue_digits_pairs", help="JSON name in benchmarks/results/")
    parser.add_argument("--add-to", action="store_true",
                        help="add these variants to the runs already in the output JSON (same pairs, queries and "
                             "classifier; earlier variants are kept), then re-summarise")
    args = parser.parse_args()
    named = {"all": ",".join(VARIANTS), "benchmark": BENCHMARK_VARIANTS}
    args.variants = named.get(args.variants, args.variants).split(",")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    t0 = time.perf_counter()
    data = digits_split()
    X_train, X_test, y_train, y_test = data
    encoder, encoder_info = cached_encoder(X_train, **encoder_overrides(args))
    Z_train = encoder.transform(X_train)
    oracle = SVC(gamma="scale").fit(X_train.reshape(len(X_train), -1), y_train)
    oracle_acc = float(oracle.score(X_test.reshape(len(X_test), -1), y_test))
    pairs = parse_pairs(args.pairs, args.seed)
    previous = None
    if args.add_to:
        previous = json.loads((RESULTS / f"{args.output}.json").read_text())
        same = (previous["settings"]["pairs"] == [list(p) for p in pairs]
                and previous["settings"]["n_queries"] == args.n_queries
                and previous["settings"]["classifier"] == args.classifier)
        if not same:
            parser.error("--add-to needs the pairs, --n-queries and --classifier of the existing JSON")
    runs = [run_pair(pair, encoder, oracle, data, Z_train, args) for pair in pairs]
    # Every parameter, not only the repr's non-defaults: a later change of a default must not
    # change what a stored row says it ran.
    finder_params = lambda v: {k: repr(p) for k, p in ModalDirectionFinder(  # noqa: E731
        n_modes=VARIANTS[v]["n_modes"], **VARIANTS[v].get("finder", {})).get_params().items()}
    variants = {v: {"repr": repr(m), "params": {k: repr(p) for k, p in m.get_params().items()},
                    "finder_params": finder_params(v)}
                for v, m in ((v, VARIANTS[v]["method"]()) for v in args.variants)}
    wall = time.perf_counter() - t0
    if previous is not None:
        for old, new in zip(previous["runs"], runs):
            old["variants"].update(new["variants"])
        runs = previous["runs"]
        variants = {**previous["settings"]["variants"], **variants}
        wall += previous["wall_time_s"]
    write_json(args.output, {
        "settings": {"pairs": pairs, "n_queries": args.n_queries, "classifier": args.classifier,
                     "independent_classifier": "MLPClassifier(128) on pixels, random_state=1",
                     "variants": variants,
                     "encoder": encoder_info, "encoder_params": encoder.get_params(),
                     "oracle": "SVC(rbf) on pixels"},
        "oracle_accuracy": oracle_acc, "wall_time_s": wall,
        "runs": runs, "summary": summarise(runs),
    })


if __name__ == "__main__":
    main()
