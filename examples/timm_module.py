"""Explain any timm model passed as a plain torch module (trained with your own loop).

The explainer only needs logits: a module taking ``(n, C, H, W)`` images in [-1, 1] (skcfx's
convention; pass ``input_range=(0, 1)`` to ``skcfx.classifiers.as_proba_model`` for [0, 1]).

    python examples/timm_module.py [--quick]
"""

import argparse

import numpy as np
import timm
import torch

from skcfx import CounterfactualExplainer, DiffAEEncoder
from skcfx.datasets import load_digits_images


def train_timm(X, y, epochs, seed=0):
    """A few epochs of plain torch training on images in [-1, 1] (channels first)."""
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2, in_chans=1)
    x = torch.from_numpy(X).permute(0, 3, 1, 2) * 2 - 1
    target = torch.from_numpy(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    args = parser.parse_args(argv)
    X, digits = load_digits_images(image_size=16)
    y = np.isin(digits, [1, 7]).astype(np.int64)
    model = train_timm(X, y, epochs=1 if args.quick else 5)
    encoder = DiffAEEncoder(max_steps=10 if args.quick else 1500, encode_steps=4 if args.quick else 20,
                            decode_steps=4 if args.quick else 20, random_state=0).fit(X)
    # A torch.nn.Module as classifier: used as is (never refitted), gradients available for DiME.
    explainer = CounterfactualExplainer(encoder=encoder, classifier=model, random_state=0).fit(X, y)
    explanation = explainer.explain(X[y == 0][:4])
    print(explanation)
    return explanation


if __name__ == "__main__":
    main()
