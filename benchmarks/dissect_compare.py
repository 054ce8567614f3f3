"""Benchmark: DifCluE vs DISSECT on the same DiffAE, classifier and queries (the DifCluE paper's comparison).

Mixed-class protocol on 16 px digits, as in ``difclue_digits.py``: two digits form the positive
class, every other digit is negative; held-out negatives are explained towards the positive
class. Both methods use the shipped pretrained digits DiffAE, the same resnet18 classifier per
pair and the same queries:

* ``difclue``: the library default (2 modes, per-query step search);
* ``dissect``: ``method='dissect'`` with K = 2 traversals learned jointly (skcfx.methods.dissect),
  with the setting chosen by a small grid on the first pair, scored on *training* negatives
  (never on the test queries).

Metrics (paper layout): percent conversion per mode / concept (an SVC oracle on pixels trained
on the 10 digit labels says whether the counterfactual shows the digit; DISSECT's concepts are
unlabelled, so each concept is matched to a digit of the pair by the best one-to-one assignment
on the oracle's counts, which favours DISSECT), flip rate, FID (Frechet distance of the
classifier's penultimate features and of 32-component pixel PCA features, counterfactuals vs
the training images of the positive class), distinctness (logistic regression on
counterfactual - query, 5 folds grouped by query), substitutability (the classifier's recipe
trained only on counterfactuals of training images, both directions, tested on the real test
set; ratio to the original), importance (R, rho, KL, MSE of requested vs obtained target
probability along traversals: DISSECT strengths s in {0, .25, .5, .75, 1} request
``p_0 + s (1 - p_0)``; DifCluE steps ``s * A`` along each mode's direction, A the median step its
search found, request the same), training time of the traversals / directions, NFE and seconds
per counterfactual.

    python benchmarks/dissect_compare.py [--quick] [--pairs 1,7 0,6] [--n-queries 100]
    python benchmarks/dissect_compare.py --readme   # rewrite the README section from the JSON
"""

import argparse
import json
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.svm import SVC

from _common import CACHE, HERE, RESULTS, cached_encoder, digits_split, load_or_fit, write_json
from skcfx import CounterfactualExplainer, ModalDirectionFinder
from skcfx.classifiers import TimmClassifier, feature_extractor
from skcfx.methods import DISSECT, DifCluE
from skcfx.metrics import distinctness, frechet_distance, importance, substitutability
from skcfx.protocols import evaluate_mode_conversion, match_concepts, mixed_class_labels, mode_subclasses

CLASSIFIER = dict(model_name="resnet18", max_epochs=15, batch_size=64, random_state=0)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
# DISSECT's base setting (checkpoint off: at 16 px memory is no concern and it is 1.6x faster on a CPU).
DISSECT_BASE = dict(n_concepts=2, n_steps=300, batch_size=16, learning_rate=1e-2, train_decode_steps=3,
                    decode_steps=10, checkpoint=False)
# The small tuning grid (overrides of DISSECT_BASE), scored on training negatives of the first pair.
DISSECT_GRID = {
    "base": {},  # the library defaults (distinctness_weight=2.0, hidden_dim=32)
    "distinctness_0.5": {"distinctness_weight": 0.5},
    "direction_only": {"hidden_dim": 0},
}


def pair_classifier(pair, X_train, yb_train):
    """The pair's resnet18 (difclue_digits.py's recipe), cached under SKCFX_BENCH_CACHE."""
    path = CACHE / f"classifier_digits16_pair{pair[0]}{pair[1]}_resnet18_e{CLASSIFIER['max_epochs']}.joblib"
    return load_or_fit(path, lambda: TimmClassifier(**CLASSIFIER).fit(X_train, yb_train))


def _importance_difclue(explainer, queries, reference_alpha):
    curve = explainer.importance_curve(queries, alphas=np.asarray(STRENGTHS) * reference_alpha, target_class=1)
    p0 = explainer.proba_model_.predict_proba(queries)[:, 1]
    wanted = p0[:, None, None] + np.asarray(STRENGTHS)[None, None] * (1 - p0[:, None, None])
    wanted = np.broadcast_to(wanted, curve["proba"].shape)
    valid = np.isfinite(curve["proba"])
    return importance(wanted[valid], curve["proba"][valid])


def _importance_dissect(explainer, queries):
    method = explainer.method_
    original = method.strength
    p0 = explainer.proba_model_.predict_proba(queries)[:, 1]
    wanted, got = [], []
    try:
        for s in STRENGTHS:
            method.set_params(strength=float(s))
            e = explainer.explain(queries, target_class=1)
            got.append(e.cf_proba[..., 1])
            wanted.append(np.broadcast_to((p0 + s * (1 - p0))[:, None], e.cf_proba.shape[:2]))
    finally:
        method.set_params(strength=original)
    return importance(np.stack(wanted), np.stack(got))


def _substitutability(explainer, X_sub, y_sub, X_test, yb_test, original_acc, epochs):
    """Train the classifier's recipe on counterfactuals of training images (both directions)."""
    e = explainer.explain(X_sub, target_class=1 - y_sub)
    valid = e.cf_target_class >= 0
    cfs = e.counterfactuals[valid]
    targets = e.cf_target_class[valid]
    labels = np.asarray(explainer.classes_)[targets]
    recipe = {**CLASSIFIER, "max_epochs": epochs}
    return substitutability(cfs, labels, X_test, yb_test, lambda: TimmClassifier(**recipe), original_acc)


def evaluate(name, explainer, queries, mapping, oracle_predict, ctx):
    """All metrics of one fitted explainer on the pair's queries."""
    explanation = explainer.explain(queries, target_class=1)
    if mapping is None:  # DISSECT: concepts are matched to digits afterwards
        mapping = match_concepts(explanation, oracle_predict, ctx["pair"])
    m = evaluate_mode_conversion(explanation, oracle_predict, mapping)
    n, k = explanation.mode_ids.shape
    cfs = explanation.counterfactuals.reshape((n * k,) + explanation.counterfactuals.shape[2:])
    m["concept_to_digit"] = {str(c): d for c, d in mapping.items()}
    m["fid_classifier_features"] = float(frechet_distance(ctx["features"](ctx["real"]), ctx["features"](cfs)))
    m["fid_pixel_pca32"] = float(frechet_distance(ctx["pca"].transform(ctx["real"].reshape(len(ctx["real"]), -1)),
                                                  ctx["pca"].transform(cfs.reshape(len(cfs), -1))))
    m["distinctness"] = distinctness(explanation.images, explanation.counterfactuals, explanation.mode_ids,
                                     random_state=0)
    t0 = time.perf_counter()
    if name == "difclue":
        reference = float(np.nanmedian(explanation.alphas))
        m["importance"] = _importance_difclue(explainer, queries[: ctx["n_importance"]], reference)
        m["importance"]["reference_alpha"] = reference
    else:
        m["importance"] = _importance_dissect(explainer, queries[: ctx["n_importance"]])
    m["importance"]["seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    m["substitutability"] = _substitutability(explainer, ctx["X_sub"], ctx["y_sub"], ctx["X_test"], ctx["yb_test"],
                                              ctx["classifier_accuracy"], ctx["sub_epochs"])
    m["substitutability"]["seconds"] = time.perf_counter() - t0
    m["explain_wall_time_s"] = explanation.wall_time_s
    return m


def fit_dissect(encoder, classifier, X_train, yb_train, params):
    t0 = time.perf_counter()
    explainer = CounterfactualExplainer(encoder=encoder, classifier=classifier, method=DISSECT(**params),
                                        random_state=0).fit(X_train, yb_train)
    return explainer, time.perf_counter() - t0


def tune_dissect(encoder, classifier, X_train, yb_train, y_train, oracle_predict, pair, args):
    """Fit every grid setting; score percent conversion and flip rate on training negatives."""
    tuning_queries = X_train[yb_train == 0][: args.n_tuning]
    rows, fitted = {}, {}
    for name, override in DISSECT_GRID.items():
        params = {**DISSECT_BASE, **override, **({"n_steps": args.dissect_steps} if args.dissect_steps else {})}
        explainer, fit_s = fit_dissect(encoder, classifier, X_train, yb_train, params)
        e = explainer.explain(tuning_queries, target_class=1)
        mapping = match_concepts(e, oracle_predict, pair)
        m = evaluate_mode_conversion(e, oracle_predict, mapping)
        h = explainer.method_.history_
        rows[name] = {"params": params, "percent_conversion": m["percent_conversion"], "flip_rate": m["flip_rate"],
                      "score": 0.5 * (m["percent_conversion"]["mean"] + m["flip_rate"]), "fit_s": fit_s,
                      "loss_first10": float(np.mean(h["loss"][:10])), "loss_last10": float(np.mean(h["loss"][-10:])),
                      "posterior_accuracy_last10": float(np.mean(h["posterior_accuracy"][-10:]))}
        fitted[name] = explainer
        print("tune", pair, name, {k: rows[name][k] for k in ("score", "flip_rate", "fit_s")}, flush=True)
    best = max(rows, key=lambda r: rows[r]["score"])
    return best, rows, fitted[best]


def run_pair(pair, encoder, oracle, data, args, dissect_params=None):
    """One pair, both methods, every metric. ``dissect_params=None`` tunes DISSECT on this pair first.

    Returns the pair's result dict (and the DISSECT setting used, for the next pairs).
    """
    X_train, X_test, y_train, y_test = data
    yb_train, yb_test = mixed_class_labels(y_train, pair), mixed_class_labels(y_test, pair)
    classifier, clf_fit_s = pair_classifier(pair, X_train, yb_train)
    clf_acc = float(np.mean(classifier.predict(X_test) == yb_test))
    queries = X_test[yb_test == 0][: args.n_queries]

    def oracle_predict(images):
        return oracle.predict(np.asarray(images).reshape(len(images), -1))

    rng = np.random.default_rng(0)
    sub_idx = np.concatenate([rng.choice(np.flatnonzero(yb_train == c), args.n_substitutability, replace=False)
                              for c in (0, 1)])
    real = X_train[yb_train == 1]
    pca = PCA(32, random_state=0).fit(X_train.reshape(len(X_train), -1))
    ctx = {"pair": pair, "features": feature_extractor(classifier), "real": real, "pca": pca,
           "X_sub": X_train[sub_idx], "y_sub": yb_train[sub_idx], "X_test": X_test, "yb_test": yb_test,
           "classifier_accuracy": clf_acc, "n_importance": args.n_importance, "sub_epochs": args.sub_epochs}
    out = {"pair": list(pair), "classifier_accuracy": clf_acc, "classifier_fit_s": clf_fit_s,
           "n_queries": len(queries), "methods": {}}

    # DifCluE (library default): "training" = the mode finder + the method's fit.
    t0 = time.perf_counter()
    Z_train = encoder.transform(X_train)
    finder = ModalDirectionFinder(n_modes=2, random_state=0).fit(Z_train, yb_train)
    explainer = CounterfactualExplainer(encoder=encoder, direction_finder=finder, classifier=classifier,
                                        method=DifCluE(), random_state=0).fit(X_train, yb_train)
    difclue_fit_s = time.perf_counter() - t0
    mapping, recovery = mode_subclasses(finder, y_train, class_label=1)
    m = evaluate("difclue", explainer, queries, mapping, oracle_predict, ctx)
    m.update(training_s=difclue_fit_s, mode_recovery=recovery)
    out["methods"]["difclue"] = m
    print(pair, "difclue", {k: m[k] for k in ("percent_conversion", "flip_rate", "n_function_evals")}, flush=True)

    # DISSECT: tuned on the first pair's training negatives, then reused.
    if dissect_params is None:
        best, grid, explainer = tune_dissect(encoder, classifier, X_train, yb_train, y_train, oracle_predict,
                                             pair, args)
        out["dissect_tuning"] = {"chosen": best, "grid": grid,
                                 "score": "mean of percent conversion and flip rate on training negatives"}
        dissect_params = grid[best]["params"]
    else:
        explainer, _ = fit_dissect(encoder, classifier, X_train, yb_train, dissect_params)
    method = explainer.method_
    m = evaluate("dissect", explainer, queries, None, oracle_predict, ctx)
    m.update(training_s=method.fit_time_s_, train_nfe=method.train_nfe_, params=dissect_params,
             loss_first10=float(np.mean(method.history_["loss"][:10])),
             loss_last10=float(np.mean(method.history_["loss"][-10:])),
             posterior_accuracy_last10=float(np.mean(method.history_["posterior_accuracy"][-10:])))
    out["methods"]["dissect"] = m
    print(pair, "dissect", {k: m[k] for k in ("percent_conversion", "flip_rate", "n_function_evals")}, flush=True)
    return out, dissect_params


def summarise(runs):
    summary = {}
    for name in ("difclue", "dissect"):
        per = [r["methods"][name] for r in runs]

        def mean(f):
            return float(np.mean([f(m) for m in per]))

        summary[name] = {
            "percent_conversion_mean": mean(lambda m: m["percent_conversion"]["mean"]),
            "flip_rate": mean(lambda m: m["flip_rate"]),
            "fid_classifier_features": mean(lambda m: m["fid_classifier_features"]),
            "fid_pixel_pca32": mean(lambda m: m["fid_pixel_pca32"]),
            **{f"distinctness_{k}": mean(lambda m, k=k: m["distinctness"][k]) for k in per[0]["distinctness"]},
            "substitutability_ratio": mean(lambda m: m["substitutability"]["ratio"]),
            **{f"importance_{k}": mean(lambda m, k=k: m["importance"][k]) for k in ("R", "rho", "KL", "MSE")},
            "training_s": mean(lambda m: m["training_s"]),
            "n_function_evals": mean(lambda m: m["n_function_evals"]),
            "seconds_per_counterfactual": mean(lambda m: m["seconds_per_counterfactual"]),
            "l1": mean(lambda m: m["l1"]),
        }
    return summary


HERE_ROOT = HERE.parent
README_START, README_END = "<!-- dissect:start -->", "<!-- dissect:end -->"


def readme_lines(result):
    """The README section (one table in the paper's layout) from a result of this script."""
    m = result["machine"]
    machine = m["cuda"] or f"a {m['cpu_count']}-core CPU, {m['torch_threads']} torch thread"
    runs, summary, s = result["runs"], result["summary"], result["settings"]
    tuning = runs[0].get("dissect_tuning", {})
    ours = {name: summary[name] for name in ("difclue", "dissect")}

    def f(v, d=2):
        return "n/a" if v is None else f"{v:.{d}f}"

    def per_mode(name):
        parts = []
        for r in runs:
            pm = r["methods"][name]["percent_conversion"]["per_mode"]
            parts.append(", ".join(f"{k}: {v:.2f}" for k, v in pm.items()))
        return "; ".join(parts)

    rows = [
        ("percent conversion, per mode / concept", "0.73-0.88", "0.33-0.65", per_mode("difclue"), per_mode("dissect")),
        ("percent conversion, mean", "0.83", "0.53", f(ours["difclue"]["percent_conversion_mean"]),
         f(ours["dissect"]["percent_conversion_mean"])),
        ("flip rate", "n/a", "n/a", f(ours["difclue"]["flip_rate"]), f(ours["dissect"]["flip_rate"])),
        ("FID (paper: Inception; ours: classifier features)", "9.26", "11.0",
         f(ours["difclue"]["fid_classifier_features"], 1), f(ours["dissect"]["fid_classifier_features"], 1)),
        ("FID, pixel PCA-32 features", "n/a", "n/a", f(ours["difclue"]["fid_pixel_pca32"], 1),
         f(ours["dissect"]["fid_pixel_pca32"], 1)),
    ]
    for key, label in (("accuracy", "accuracy"), ("precision_micro", "precision micro"),
                       ("precision_macro", "precision macro"), ("recall_micro", "recall micro"),
                       ("recall_macro", "recall macro")):
        rows.append((f"distinctness, {label}", "similar", "similar", f(ours["difclue"][f"distinctness_{key}"]),
                     f(ours["dissect"][f"distinctness_{key}"])))
    rows.append(("substitutability (ratio to the original)", "similar", "similar",
                 f(ours["difclue"]["substitutability_ratio"]), f(ours["dissect"]["substitutability_ratio"])))
    for key in ("R", "rho", "KL", "MSE"):
        rows.append((f"importance, {key}", "similar", "similar", f(ours["difclue"][f"importance_{key}"], 3),
                     f(ours["dissect"][f"importance_{key}"], 3)))
    rows += [
        ("training of directions / traversals, s", "n/a", "n/a", f(ours["difclue"]["training_s"], 1),
         f(ours["dissect"]["training_s"], 1)),
        ("denoiser calls (NFE) per counterfactual", "n/a", "n/a", f(ours["difclue"]["n_function_evals"], 1),
         f(ours["dissect"]["n_function_evals"], 1)),
        ("seconds per counterfactual", "n/a", "n/a", f(ours["difclue"]["seconds_per_counterfactual"], 3),
         f(ours["dissect"]["seconds_per_counterfactual"], 3)),
    ]
    pairs = ", ".join(f"{r['pair'][0]}/{r['pair'][1]}" for r in runs)
    lines = [
        f"**DifCluE vs DISSECT** (`benchmarks/dissect_compare.py`, {result['date']}, {machine}, torch "
        f"{m['versions']['torch']}; JSON `benchmarks/results/dissect_compare.json`): the DifCluE paper's comparison "
        f"reproduced on one generator (the shipped digits DiffAE), one resnet18 classifier per pair and the same "
        f"{s['n_queries']} held-out negatives per pair (pairs {pairs}; ours = mean over the pairs). The paper's "
        "figures are on CelebA (two mixed attributes); it reports distinctness, substitutability and importance "
        "as similar for both methods (our notes keep no figures for them). The whole run (DISSECT's grid "
        f"included) took {result['total_wall_s'] / 60:.0f} min with other jobs sharing the 2 cores.",
        "",
        "| metric | paper: DifCluE | paper: DISSECT | ours: DifCluE | ours: DISSECT |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    if tuning:
        chosen = tuning["grid"][tuning["chosen"]]["params"]
        grid = "; ".join(f"{name} {g['score']:.2f} (conversion {g['percent_conversion']['mean']:.2f}, flip "
                         f"{g['flip_rate']:.2f})" for name, g in tuning["grid"].items())
        lines += ["", f"DISSECT tuning (pair {runs[0]['pair'][0]}/{runs[0]['pair'][1]}, scored on "
                  f"training negatives by the mean of percent conversion and flip rate): {grid}; chosen: "
                  f"**{tuning['chosen']}** ({chosen['n_steps']} Adam steps of {chosen['batch_size']} images x "
                  f"{chosen['n_concepts']} concepts, {chosen['train_decode_steps']} differentiable DDIM steps; "
                  "the other pairs reuse it)."]
    lines += ["", verdict(ours)]
    supplement = RESULTS / "dissect_compare_tuned_each.json"
    if supplement.is_file():
        sup = json.loads(supplement.read_text())
        for r in sup["runs"]:
            t, d = r["dissect_tuning"], r["methods"]["dissect"]
            pm = ", ".join(f"{k}: {v:.2f}" for k, v in d["percent_conversion"]["per_mode"].items())
            lines += ["", f"Tuned on its own pair (`--tune-every-pair --pairs {r['pair'][0]},{r['pair'][1]}`, "
                      f"`benchmarks/results/dissect_compare_tuned_each.json`, {sup['date']}): the grid on "
                      f"{r['pair'][0]}/{r['pair'][1]}'s training negatives chose **{t['chosen']}** ("
                      + "; ".join(f"{n} {g['score']:.2f}" for n, g in t["grid"].items())
                      + f"); DISSECT then converts {d['percent_conversion']['mean']:.2f} ({pm}), flip rate "
                      f"{d['flip_rate']:.2f}, FID (classifier features) {d['fid_classifier_features']:.1f}, "
                      f"distinctness accuracy {d['distinctness']['accuracy']:.2f}, importance R "
                      f"{d['importance']['R']:.3f}, substitutability {d['substitutability']['ratio']:.2f}."]
    return lines


def verdict(ours):
    """Who wins each measured criterion, in words, from the summary figures."""
    a, b = ours["difclue"], ours["dissect"]
    criteria = [("percent conversion", "percent_conversion_mean", True), ("flip rate", "flip_rate", True),
                ("FID (classifier features)", "fid_classifier_features", False),
                ("FID (pixel PCA)", "fid_pixel_pca32", False),
                ("distinctness accuracy", "distinctness_accuracy", True),
                ("substitutability", "substitutability_ratio", True), ("importance R", "importance_R", True),
                ("importance KL", "importance_KL", False), ("NFE per counterfactual", "n_function_evals", False),
                ("training time", "training_s", False)]
    wins = {"DifCluE": [], "DISSECT": []}
    ties = []
    for label, key, higher in criteria:
        x, y = a[key], b[key]
        if abs(x - y) <= 0.01 * max(abs(x), abs(y), 1e-12):
            ties.append(label)
            continue
        better = "DifCluE" if (x > y) == higher else "DISSECT"
        wins[better].append(f"{label} ({x:.3g} vs {y:.3g}, DifCluE first)")
    text = []
    for name in ("DifCluE", "DISSECT"):
        if wins[name]:
            text.append(f"**{name} wins** on " + "; ".join(wins[name]) + ".")
    if ties:
        text.append("Within 1%: " + ", ".join(ties) + ".")
    return " ".join(text)


def write_readme(result):
    readme = HERE_ROOT / "README.md"
    text = readme.read_text()
    block = README_START + "\n" + "\n".join(readme_lines(result)).rstrip() + "\n" + README_END
    if README_START in text:
        head, rest = text.split(README_START, 1)
        text = head + block + rest.split(README_END, 1)[1]
    else:
        raise SystemExit(f"README.md has no {README_START} marker")
    readme.write_text(text)
    print("\n".join(readme_lines(result)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", action="store_true", help="only rewrite the README section from the JSON")
    parser.add_argument("--pairs", nargs="+", default=["1,7", "0,6"])
    parser.add_argument("--n-queries", type=int, default=100)
    parser.add_argument("--n-importance", type=int, default=20)
    parser.add_argument("--n-substitutability", type=int, default=40, help="training images per class")
    parser.add_argument("--sub-epochs", type=int, default=15)
    parser.add_argument("--n-tuning", type=int, default=40, help="training negatives scoring the DISSECT grid")
    parser.add_argument("--dissect-steps", type=int, default=None, help="override n_steps (default: the grid's)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute smoke run (one pair, tiny sizes)")
    parser.add_argument("--tune-every-pair", action="store_true",
                        help="score the DISSECT grid on every pair's own training negatives (default: the first pair's)")
    parser.add_argument("--name", default=None, help="JSON name (default: dissect_compare, or _quick)")
    args = parser.parse_args()
    if args.readme:
        write_readme(json.loads((RESULTS / "dissect_compare.json").read_text()))
        return
    if args.quick:
        args.pairs, args.n_queries, args.n_importance, args.n_substitutability = ["1,7"], 6, 3, 4
        args.sub_epochs, args.n_tuning, args.dissect_steps = 1, 4, 2

    t_start = time.perf_counter()
    data = digits_split()
    X_train, X_test, y_train, y_test = data
    encoder, encoder_info = cached_encoder(X_train)
    oracle = SVC(gamma="scale").fit(X_train.reshape(len(X_train), -1), y_train)
    oracle_acc = float(oracle.score(X_test.reshape(len(X_test), -1), y_test))
    runs, params = [], None
    for p in args.pairs:
        run, params = run_pair(tuple(int(d) for d in p.split(",")), encoder, oracle, data, args,
                               None if args.tune_every_pair else params)
        runs.append(run)
    name = args.name or ("dissect_compare_quick" if args.quick else "dissect_compare")
    write_json(name, {
        "settings": {"pairs": args.pairs, "n_queries": args.n_queries, "tune_every_pair": args.tune_every_pair, "n_importance": args.n_importance,
                     "n_substitutability_per_class": args.n_substitutability, "sub_epochs": args.sub_epochs,
                     "strengths": STRENGTHS, "classifier": CLASSIFIER, "encoder": encoder_info,
                     "encode_steps": encoder.encode_steps, "dissect_base": DISSECT_BASE, "dissect_grid": DISSECT_GRID,
                     "oracle": "SVC(rbf) on pixels"},
        "oracle_accuracy": oracle_acc, "runs": runs, "summary": summarise(runs),
        "paper": {"difclue": {"percent_conversion_mean": 0.83, "fid": 9.26},
                  "dissect": {"percent_conversion_mean": 0.53, "fid": 11.0},
                  "source": "DifCluE paper, CelebA mixed-attribute protocol (shared/DESIGN.md section 2)"},
        "total_wall_s": time.perf_counter() - t_start,
    })


if __name__ == "__main__":
    main()
