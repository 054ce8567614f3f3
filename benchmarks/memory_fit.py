"""Benchmark: peak memory of ``DiffAEEncoder.fit`` on 2,000 vs 20,000 PNG files (64x64 RGB).

The files are written to a temporary folder; each fit (a few training steps of the default 64 px
DiffAE) runs in a fresh process, and its peak resident memory (``resource.getrusage``: the
process itself, and separately the largest DataLoader worker) is what is compared. Goals
(issue 13): peak ratio large/small <= 1.1, and the larger fit's extra memory below a quarter of
what the extra images would take as float32.

``--modes`` chooses what ``fit`` receives: ``folder`` (the folder path: streamed), ``paths`` (a
list of the file paths: streamed), ``array`` (``load_image_folder`` first, a uint8 array).
``--baseline PATH`` also runs the ``paths`` mode against another skcfx checkout (e.g. the main
branch before streaming), for a before/after comparison in the same JSON.

    python benchmarks/memory_fit.py [--sizes 2000 20000] [--modes folder paths array] [--baseline /work/main]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import write_json

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from skcfx import DiffAEEncoder
folder, mode, steps, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
params = dict(max_steps=steps, batch_size=16, random_state=0, device="cpu")
if workers != "default":
    params["num_workers"] = int(workers)
encoder = DiffAEEncoder(**params)
files = sorted(Path(folder).rglob("*.png"))
if mode == "folder":
    X = folder
elif mode == "paths":
    X = [str(f) for f in files]
else:
    from skcfx.datasets import load_image_folder
    X = load_image_folder(folder, 64)[0]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
encoder.fit(X)
print(json.dumps({"mode": mode, "n_files": len(files), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_fit_mb": before / 1024,
                  "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "fit_s": time.perf_counter() - start, "steps": steps}))
"""


def _write_pngs(folder, n, rng):
    """``n`` 64x64 RGB PNGs of smooth random blobs (they compress like photos, not like noise)."""
    from PIL import Image

    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    for i in range(n):
        a, b, c = rng.random(3)
        image = np.stack([np.sin(6 * a * xx + 3 * b), np.cos(5 * b * yy + 2 * c), xx * yy * c], -1)
        image = ((image - image.min()) / (np.ptp(image) + 1e-6) * 255).astype(np.uint8)
        sub = Path(folder, f"class{i % 2}")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"{i:06d}.png")


def _fit(folder, mode, steps, workers, pythonpath):
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), mode, str(steps), workers],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _goals(rows, extra_float32_mb):
    small, large = rows[0], rows[-1]
    extra = large["peak_rss_mb"] - small["peak_rss_mb"]
    return {"peak_ratio": large["peak_rss_mb"] / small["peak_rss_mb"], "extra_mb": extra,
            "extra_over_float32_of_extra_images": extra / extra_float32_mb,
            "goal_ratio_met": large["peak_rss_mb"] / small["peak_rss_mb"] <= 1.1,
            "goal_extra_met": extra < 0.25 * extra_float32_mb}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000])
    parser.add_argument("--modes", nargs="+", default=["folder", "paths", "array"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--workers", default="default", help="num_workers for fit ('default': the estimator's)")
    parser.add_argument("--baseline", default=None, help="another checkout to run the 'paths' mode against")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parents[1])
    rng = np.random.default_rng(0)
    extra_float32_mb = (args.sizes[1] - args.sizes[0]) * 64 * 64 * 3 * 4 / 2**20
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for n in args.sizes:
            folders[n] = Path(tmp, str(n))
            _write_pngs(folders[n], n, rng)
        runs = [(mode, here, mode) for mode in args.modes]
        if args.baseline:
            runs.append(("baseline_paths", args.baseline, "paths"))
        for label, pythonpath, mode in runs:
            rows = [_fit(folders[n], mode, args.steps, args.workers, pythonpath) for n in args.sizes]
            for row in rows:
                print(label, row, flush=True)
            results[label] = {"rows": rows, **_goals(rows, extra_float32_mb), "pythonpath": pythonpath}
    baseline_commit = None
    if args.baseline:
        baseline_commit = subprocess.run(["git", "-C", args.baseline, "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip()
    write_json("memory_fit", {
        "settings": {"sizes": args.sizes, "steps": args.steps, "image": "64x64 RGB PNG", "batch_size": 16,
                     "workers": args.workers, "baseline": args.baseline, "baseline_commit": baseline_commit},
        "extra_images_float32_mb": extra_float32_mb,
        "results": results,
        "note": "peak RSS of the fitting process (ru_maxrss); worker_peak_rss_mb is the largest child",
    })


if __name__ == "__main__":
    main()
