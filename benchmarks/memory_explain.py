"""Benchmark: peak memory of `explain` on 500 vs 10,000 images (bounded-memory check).

Each size runs in a fresh subprocess (peak resident memory via `resource.getrusage`). A tiny
untrained DiffAE and few DDIM steps keep it fast: the memory pattern (batches of decoder
activations, results accumulated as numpy) is what is measured, not quality.

    python benchmarks/memory_explain.py [--sizes 500 10000]
"""

import argparse
import json
import subprocess
import sys

from _common import write_json

CHILD = r"""
import json, resource, sys
import numpy as np, torch
from sklearn.linear_model import LogisticRegression
from skcfx import CounterfactualExplainer, DiffAEEncoder
from skcfx.datasets import load_digits_images
from skcfx.methods import DifCluE
torch.set_num_threads(1)
n = int(sys.argv[1])
X, digits = load_digits_images(image_size=16)
y = np.isin(digits, [1, 7]).astype(int)
arch = dict(model_channels=16, channel_mult=(1, 1), enc_channel_mult=(1, 2), attention_resolutions=(8,),
            embed_channels=32, latent_dim=16)
enc = DiffAEEncoder(architecture=arch, max_steps=2, batch_size=16, encode_steps=2, decode_steps=2,
                    random_state=0, device="cpu").fit(X[:64])
clf = LogisticRegression(max_iter=200).fit(X.reshape(len(X), -1), y)
ex = CounterfactualExplainer(encoder=enc, classifier=clf, method=DifCluE(alpha=0.5), batch_size=64,
                             random_state=0).fit(X, y)
queries = X[np.arange(n) % len(X)]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
e = ex.explain(queries)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "peak_rss_mb": peak / 1024, "rss_before_explain_mb": base / 1024,
                  "result_mb": (e.counterfactuals.nbytes + e.images.nbytes) / 2**20, "wall_time_s": e.wall_time_s}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 10000])
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    small, large = rows[0], rows[-1]
    # What explain adds on top of the fitted models, minus the returned arrays themselves.
    overhead = [r["peak_rss_mb"] - r["rss_before_explain_mb"] - r["result_mb"] for r in (small, large)]
    write_json("memory_explain", {
        "rows": rows,
        "peak_ratio_large_to_small": large["peak_rss_mb"] / small["peak_rss_mb"],
        "explain_overhead_mb_excluding_results": overhead,
        "note": "peak RSS of the whole process; results (images + counterfactuals) grow linearly by design",
    })


if __name__ == "__main__":
    main()
