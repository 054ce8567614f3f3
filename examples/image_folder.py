"""Explain a classifier on your own images stored as ``root/<class>/<image>`` folders.

Without a folder argument, a small folder of digit PNGs is written first (to ``OUTPUT/images``).
Writes ``OUTPUT/counterfactuals.png`` and the report ``OUTPUT/report.html`` and prints where.
The same as a command line: ``skcfx train`` then ``skcfx explain`` (see ``skcfx --help``).

    python examples/image_folder.py [ROOT] [--output image_folder_output] [--image-size 16] [--quick]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from skcfx import CounterfactualExplainer, DiffAEEncoder
from skcfx.classifiers import TimmClassifier
from skcfx.datasets import load_digits_images, load_image_folder


def write_example_folder(root, n_per_class=60):
    """Digits 1/7 as class 'one_or_seven' and digits 0/3 as class 'other', as PNG files."""
    X, digits = load_digits_images(image_size=16)
    for name, members in (("one_or_seven", (1, 7)), ("other", (0, 3))):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(X[np.isin(digits, members)][:n_per_class]):
            Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return Path(root)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", help="folder with one sub-folder per class")
    parser.add_argument("--output", default="image_folder_output", help="where pictures and the report go")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.root:
        root = Path(args.root)
    else:
        root = write_example_folder(out / "images")
        print(f"wrote an example image folder to {root.resolve()}")
    X, y, class_names = load_image_folder(root, args.image_size)
    print(f"{len(X)} images of {X.shape[1:]} in classes {class_names}")
    encoder = DiffAEEncoder(max_steps=10 if args.quick else 1500, encode_steps=4 if args.quick else 20,
                            decode_steps=4 if args.quick else 20, random_state=0)
    classifier = TimmClassifier("test_resnet", max_epochs=1 if args.quick else 10, random_state=0)
    explainer = CounterfactualExplainer(encoder=encoder, classifier=classifier, random_state=0).fit(X, y)
    explanation = explainer.explain(X[y == 1][:4])
    explanation.plot(class_names=class_names).savefig(out / "counterfactuals.png")
    pages = explanation.to_html(out / "report.html", explainer, X=X, class_names=class_names,
                                n_curve_queries=2 if args.quick else 16)
    print(explanation)
    print(f"wrote {(out / 'counterfactuals.png').resolve()} and {pages[0].resolve()}")
    return explanation


if __name__ == "__main__":
    main()
