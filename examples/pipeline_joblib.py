"""A scikit-learn Pipeline (DiffAEEncoder -> ModalDirectionFinder), persisted with joblib and reloaded.

The pipeline maps images to their projections on every mode direction; its fitted steps are then
reused by a CounterfactualExplainer without retraining anything.

    python examples/pipeline_joblib.py [--quick]
"""

import argparse
import tempfile
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from skcfx import CounterfactualExplainer, DiffAEEncoder, ModalDirectionFinder
from skcfx.datasets import load_digits_images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    args = parser.parse_args(argv)
    X, digits = load_digits_images(image_size=8 if args.quick else 16)
    y = np.isin(digits, [1, 7]).astype(int)
    encoder = DiffAEEncoder(max_steps=10 if args.quick else 1500, encode_steps=4 if args.quick else 20,
                            decode_steps=4 if args.quick else 20, random_state=0)
    pipe = Pipeline([("encoder", encoder), ("modes", ModalDirectionFinder(n_modes=2, random_state=0))])
    pipe.fit(X, y)
    projections = pipe.transform(X[:5])
    print("projections on the", projections.shape[1], "mode directions:", projections.shape)

    path = Path(tempfile.mkdtemp()) / "pipeline.joblib"
    joblib.dump(pipe, path)
    reloaded = joblib.load(path)
    assert np.array_equal(reloaded.transform(X[:5]), projections)
    print(f"saved and reloaded {path} ({path.stat().st_size / 1e6:.1f} MB): identical projections")

    classifier = LogisticRegression(max_iter=1000).fit(X.reshape(len(X), -1), y)
    explainer = CounterfactualExplainer(encoder=reloaded.named_steps["encoder"],
                                        direction_finder=reloaded.named_steps["modes"],
                                        classifier=classifier, random_state=0).fit(X, y)
    explanation = explainer.explain(X[y == 0][:4])
    print(explanation)
    return explanation


if __name__ == "__main__":
    main()
