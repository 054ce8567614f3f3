"""Benchmark: DifCluE vs DiME vs FastDiME on the same DiffAE, classifier and queries, in one run.

Digits mixed-class task (1 and 7 form the positive class); held-out negatives are explained
towards the positive class by each method. Reports flip rate, L1 proximity, diversity sigma_L
(mean pairwise L1 between a query's counterfactuals: DifCluE's modes, DiME's samples), denoiser
evaluations (NFE) and seconds per counterfactual, and the ratios to DifCluE.

    python benchmarks/compare_methods.py [--n-queries 20] [--n-samples 2]
"""

import argparse


from _common import cached_encoder, digits_split, write_json
from skcfx import CounterfactualExplainer, ModalDirectionFinder
from skcfx.classifiers import TimmClassifier
from skcfx.methods import DiME, DifCluE, FastDiME
from skcfx.metrics import diversity, proximity
from skcfx.protocols import mixed_class_labels

PAIR = (1, 7)
CLASSIFIER = dict(model_name="resnet18", max_epochs=15, batch_size=64, random_state=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-queries", type=int, default=20)
    parser.add_argument("--n-samples", type=int, default=2, help="DiME/FastDiME counterfactuals per query")
    parser.add_argument("--encoder-steps", type=int, default=None, help="default: the shared digits recipe")
    args = parser.parse_args()

    X_train, X_test, y_train, y_test = digits_split()
    yb_train, yb_test = mixed_class_labels(y_train, PAIR), mixed_class_labels(y_test, PAIR)
    encoder, encoder_info = cached_encoder(X_train, max_steps=args.encoder_steps)
    classifier = TimmClassifier(**CLASSIFIER).fit(X_train, yb_train)
    queries = X_test[yb_test == 0][: args.n_queries]
    methods = {
        "difclue": DifCluE(),
        "dime": DiME(n_samples=args.n_samples),
        "fastdime": FastDiME(n_samples=args.n_samples),
    }
    results = {}
    for name, method in methods.items():
        explainer = CounterfactualExplainer(
            encoder=encoder, direction_finder=ModalDirectionFinder(n_modes=2, random_state=0),
            classifier=classifier, method=method, random_state=0,
        ).fit(X_train, yb_train)
        e = explainer.explain(queries, target_class=1)
        n_cf = e.success.size
        results[name] = {
            "flip_rate": e.flip_rate,
            "l1": float(proximity(e.images, e.counterfactuals)),
            "sigma_L": float(diversity(e.counterfactuals)),
            "n_function_evals": float(e.n_function_evals),
            "seconds_per_counterfactual": e.wall_time_s / n_cf,
            "n_counterfactuals": n_cf,
            "info": e.info,
        }
        print(name, {k: v for k, v in results[name].items() if k != "info"})
    base = results["difclue"]
    ratios = {name: {"nfe_ratio_to_difclue": r["n_function_evals"] / base["n_function_evals"],
                     "time_ratio_to_difclue": r["seconds_per_counterfactual"] / base["seconds_per_counterfactual"],
                     "flip_rate_minus_difclue": r["flip_rate"] - base["flip_rate"]}
              for name, r in results.items()}
    write_json("compare_methods", {
        "settings": {"pair": PAIR, "n_queries": len(queries), "n_samples": args.n_samples,
                     "classifier": CLASSIFIER, "encoder": encoder_info, "encoder_params": encoder.get_params()},
        "results": results, "ratios": ratios,
    })


if __name__ == "__main__":
    main()
