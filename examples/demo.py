"""skcfx demo: mode-wise counterfactuals on the bundled digits (the main job of `make demo`).

Task: digits 1 and 7 form one class ("positive"), every other digit the other class. A classifier
(a timm ResNet trained here) learns this task; a diffusion autoencoder (trained here) encodes the
digits; DifCluE finds the two modes of the positive class in latent space and makes, for held-out
negatives, one counterfactual per mode: "what would this digit look like if the classifier called
it positive - the 1-way, and the 7-way?". An independent oracle (an SVC trained on the 10 digit
labels) checks which digit each counterfactual shows.

Writes to the output folder: ``reconstructions.png``, ``counterfactuals.png``, ``metrics.json``,
``explanation.npz`` and ``index.html``.

    python examples/demo.py --output demo_output [--max-steps 5000] [--n-queries 60]
"""

from __future__ import annotations

import argparse
import html
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
from skcfx.protocols import evaluate_mode_conversion, mixed_class_labels, mode_subclasses

POSITIVE = (1, 7)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_output", help="folder for pictures and metrics")
    parser.add_argument("--max-steps", type=int, default=5000, help="DiffAE training steps")
    parser.add_argument("--batch-size", type=int, default=64, help="DiffAE batch size")
    parser.add_argument("--classifier-epochs", type=int, default=15)
    parser.add_argument("--n-queries", type=int, default=60, help="held-out negatives to explain")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


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


def write_html(out, metrics):
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>" for k, v in metrics.items()
    )
    (out / "index.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>skcfx demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td{{padding:2px 8px;vertical-align:top}}
img{{max-width:100%}}</style></head><body>
<h1>skcfx demo: one counterfactual per mode</h1>
<p>Digits {POSITIVE[0]} and {POSITIVE[1]} form the positive class. For held-out negatives, DifCluE makes one
counterfactual per mode of the positive class. Columns: query | one counterfactual per mode | difference maps
(red brighter, blue darker). Titles give the classifier's probability of the target class.</p>
<h2>Counterfactuals</h2><img src="counterfactuals.png">
<h2>Diffusion autoencoder reconstructions</h2><img src="reconstructions.png">
<h2>Metrics</h2><table>{rows}</table>
</body></html>
""")


def main():
    args = parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    X, y = load_digits_images(image_size=16)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=args.seed)
    yb_train, yb_test = mixed_class_labels(y_train, POSITIVE), mixed_class_labels(y_test, POSITIVE)
    print(f"[1/5] data: {len(X_train)} train / {len(X_test)} test digits, positive class = {POSITIVE}")

    print("[2/5] training the diffusion autoencoder")
    encoder = DiffAEEncoder(max_steps=args.max_steps, batch_size=args.batch_size, random_state=args.seed,
                            verbose=True).fit(X_train)
    recon_mse = save_reconstructions(encoder, X_test[:12], out / "reconstructions.png")

    print("[3/5] training the classifier to explain (timm resnet18)")
    classifier = TimmClassifier("resnet18", max_epochs=args.classifier_epochs, random_state=args.seed,
                                verbose=True).fit(X_train, yb_train)
    accuracy = float(np.mean(classifier.predict(X_test) == yb_test))

    print("[4/5] finding modes and explaining held-out negatives")
    explainer = CounterfactualExplainer(
        encoder=encoder, direction_finder=ModalDirectionFinder(n_modes=2, random_state=args.seed),
        classifier=classifier, random_state=args.seed, verbose=True,
    ).fit(X_train, yb_train)
    queries = X_test[yb_test == 0][: args.n_queries]
    explanation = explainer.explain(queries)
    explanation.save(out / "explanation.npz")
    explanation.plot(max_queries=10).savefig(out / "counterfactuals.png", dpi=120)

    print("[5/5] checking counterfactuals with an independent oracle")
    oracle = SVC(gamma="scale").fit(X_train.reshape(len(X_train), -1), y_train)
    mapping, recovery = mode_subclasses(explainer.direction_finder_, y_train, class_label=1)
    conversion = evaluate_mode_conversion(explanation, lambda im: oracle.predict(im.reshape(len(im), -1)), mapping)
    metrics = {
        "task": f"digits {POSITIVE} vs rest, 16x16",
        "diffae_training_steps": encoder.n_steps_,
        "diffae_fit_time_s": round(encoder.fit_time_s_, 1),
        "reconstruction_mse_pm1": round(recon_mse, 4),
        "classifier_test_accuracy": round(accuracy, 4),
        "mode_to_digit": {str(k): v for k, v in mapping.items()},
        "mode_recovery": recovery,
        **conversion,
        "n_queries": int(len(queries)),
        "total_time_s": round(time.perf_counter() - start, 1),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_html(out, metrics)
    print(json.dumps({k: metrics[k] for k in ("percent_conversion", "flip_rate", "n_function_evals", "mode_recovery")},
                     indent=2))
    print(f"wrote {out}/index.html, counterfactuals.png, reconstructions.png, metrics.json")


if __name__ == "__main__":
    main()
