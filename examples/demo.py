"""skcfx demo: mode-wise counterfactuals on the bundled digits (the main job of `make demo`).

Task: digits 1 and 7 form one class ("1 or 7"), every other digit the other class. A classifier
(a timm ResNet trained here) learns this task; a diffusion autoencoder encodes the digits; DifCluE
finds the two modes of the "1 or 7" class in latent space and makes, for held-out other digits,
one counterfactual per mode: "what would this digit look like if the classifier called it 1-or-7,
the 1-way, and the 7-way?". An independent oracle (an SVC trained on the 10 digit labels) checks
which digit each counterfactual shows.

By default the diffusion autoencoder is the one shipped with skcfx
(``DiffAEEncoder.from_pretrained("digits16")``, made by ``benchmarks/make_pretrained.py`` with the
same recipe), so the first pictures come in minutes; ``--train`` trains it here instead (10000
steps, about 30-45 min on one CPU core).

Writes to the output folder: ``index.html`` (the report: open it in a browser),
``reconstructions.png``, ``counterfactuals.png``, ``metrics.json`` and ``explanation.npz``.

    python examples/demo.py [--output demo_output] [--train] [--n-queries 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from skcfx import CounterfactualExplainer, DiffAEEncoder, ModalDirectionFinder
from skcfx.classifiers import TimmClassifier
from skcfx.datasets import load_digits_images
from skcfx.metrics import edit_specificity
from skcfx.protocols import evaluate_mode_conversion, mixed_class_labels, mode_subclasses

POSITIVE = (1, 7)
CLASS_NAMES = ["other digit", "1 or 7"]
# The benchmark recipe of the shipped DiffAE (benchmarks/_common.py::DIGITS_ENCODER).
RECIPE = dict(max_steps=10000, batch_size=64, learning_rate=1e-3, latent_dropout=0.1, encode_steps=20,
              decode_steps=20)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_output", help="folder for the report, pictures and metrics")
    parser.add_argument("--train", action="store_true",
                        help="train the diffusion autoencoder here instead of loading the shipped one")
    parser.add_argument("--max-steps", type=int, default=RECIPE["max_steps"], help="DiffAE training steps (--train)")
    parser.add_argument("--classifier", default="resnet10t", help="timm architecture of the explained classifier")
    parser.add_argument("--classifier-epochs", type=int, default=4)
    parser.add_argument("--n-queries", type=int, default=60, help="held-out other digits to explain")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def save_reconstructions(encoder, X, path):
    """Originals (top) and reconstructions from the inverted noise (bottom)."""
    from matplotlib.figure import Figure

    recon = encoder.reconstruct(X)
    fig = Figure(figsize=(len(X) * 0.8, 1.8), constrained_layout=True)
    axes = fig.subplots(2, len(X))
    for i in range(len(X)):
        for row, image in enumerate((X[i], recon[i])):
            axes[row, i].imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("original", fontsize=7, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=7, loc="left")
    fig.savefig(path, dpi=120)
    return float(np.mean((2 * recon - 2 * X) ** 2))


def get_encoder(args, X_train):
    if not args.train:
        print("[2/6] loading the shipped diffusion autoencoder (DiffAEEncoder.from_pretrained('digits16'))")
        return DiffAEEncoder.from_pretrained("digits16")
    print(f"[2/6] training the diffusion autoencoder ({args.max_steps} steps)")
    return DiffAEEncoder(**{**RECIPE, "max_steps": args.max_steps}, random_state=args.seed, verbose=True).fit(X_train)


def oracle_metrics(explainer, explanation, X_train, y_train):
    """Which digit an SVC trained on the 10 labels reads in each mode's counterfactuals."""
    oracle = SVC(gamma="scale").fit(X_train.reshape(len(X_train), -1), y_train)
    mapping, recovery = mode_subclasses(explainer.direction_finder_, y_train, class_label=1)
    conversion = evaluate_mode_conversion(explanation, lambda im: oracle.predict(im.reshape(len(im), -1)), mapping)
    return {"mode_to_digit": {str(k): v for k, v in mapping.items()}, "mode_recovery": recovery, **conversion}


def write_report(path, explainer, explanation, metrics, X_train, y_train):
    """The HTML report, with the modes named after the digits they hold."""
    shown = {key: metrics[key] for key in ("mode_recovery", "classifier_test_accuracy", "reconstruction_mse_pm1",
                                           "diffae_training_steps")}
    conversion = metrics["percent_conversion"]
    shown["percent_conversion"] = {**{f"digit {k}": v for k, v in conversion["per_mode"].items()},
                                   "mean": conversion["mean"]}
    explanation.to_html(path, explainer, X=X_train, fine_labels=y_train, label_names=lambda d: f"digit {d}",
                        class_names=CLASS_NAMES, title="skcfx demo: one counterfactual per mode", metrics=shown)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    X, y = load_digits_images(image_size=16)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=args.seed)
    yb_train, yb_test = mixed_class_labels(y_train, POSITIVE), mixed_class_labels(y_test, POSITIVE)
    print(f"[1/6] data: {len(X_train)} train / {len(X_test)} test digits, class 1 = digits {POSITIVE}")

    encoder = get_encoder(args, X_train)
    recon_mse = save_reconstructions(encoder, X_test[:12], out / "reconstructions.png")

    print(f"[3/6] training the classifier to explain (timm {args.classifier}, {args.classifier_epochs} epochs)")
    classifier = TimmClassifier(args.classifier, max_epochs=args.classifier_epochs, random_state=args.seed,
                                verbose=True).fit(X_train, yb_train)
    accuracy = float(np.mean(classifier.predict(X_test) == yb_test))

    print("[4/6] finding modes and explaining held-out other digits")
    explainer = CounterfactualExplainer(
        encoder=encoder, direction_finder=ModalDirectionFinder(n_modes=2), classifier=classifier,
        random_state=args.seed, verbose=True,
    ).fit(X_train, yb_train)
    print(explainer.direction_finder_.describe_modes(y_train, names=lambda d: f"digit {d}",
                                                     class_names=dict(enumerate(CLASS_NAMES))))
    queries = X_test[yb_test == 0][: args.n_queries]
    explanation = explainer.explain(queries)
    explanation.save(out / "explanation.npz")
    explanation.plot(max_queries=10, class_names=CLASS_NAMES).savefig(out / "counterfactuals.png", dpi=120)

    print("[5/6] checking counterfactuals with an independent oracle")
    metrics = {"task": f"digits {POSITIVE} vs rest, 16x16",
               "diffae": "trained here" if args.train else "shipped (skcfx.pretrained 'digits16')",
               "diffae_training_steps": encoder.n_steps_, "diffae_fit_time_s": round(encoder.fit_time_s_, 1),
               "reconstruction_mse_pm1": round(recon_mse, 4),
               "classifier": f"timm {args.classifier}, {args.classifier_epochs} epochs",
               "classifier_test_accuracy": round(accuracy, 4),
               **oracle_metrics(explainer, explanation, X_train, y_train), "n_queries": int(len(queries))}
    # Edits, not templates: how much a mode's flipped counterfactuals differ from each other,
    # relative to how much their queries differ (1: each keeps its query's look, 0: one template).
    spec = edit_specificity(explanation.images, explanation.counterfactuals,
                            np.where(explanation.success, explanation.mode_ids, -1))
    metrics["edit_specificity"] = {"spread_ratio": round(spec["spread_ratio"], 3),
                                   "closer_to_query": round(spec["closer_to_query"], 3)}

    print("[6/6] writing the report")
    write_report(out / "index.html", explainer, explanation, metrics, X_train, y_train)
    metrics["total_time_s"] = round(time.perf_counter() - start, 1)
    metrics["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: metrics[k] for k in ("percent_conversion", "flip_rate", "n_function_evals", "mode_recovery",
                                              "edit_specificity", "total_time_s")}, indent=2))
    print(f"wrote {out.resolve() / 'index.html'} (open it in a browser), counterfactuals.png, reconstructions.png, "
          "metrics.json, explanation.npz")
    return explanation


if __name__ == "__main__":
    main()
