"""Benchmark: how often ``ModalDirectionFinder(n_modes='auto')`` picks the right number of modes.

Reproduces the figures quoted in ``skcfx/modes.py`` (Notes) and the README on synthetic classes
whose number of modes is known:

* one Gaussian blob, isotropic or anisotropic (standard deviations spread over [0.5, 2]),
  60 or 300 points, in 2, 16, 64 and 512 dimensions, 5 seeds each: the right answer is 1 mode;
* 2 or 3 isotropic blobs whose centres are ``separation`` (6) noise standard deviations apart
  (a regular simplex), 300 points in 2-512 dimensions and 60 points in 2-64 dimensions;
* further single-mode classes: Gaussian, correlated Gaussian (random covariance with condition
  number 10) and uniform, 40 or 150 points, 2-512 dimensions, 12 seeds each.

Each class is fitted together with a second, single-blob class far away (the finder needs two
classes); only the class under test is scored.

    python benchmarks/modes_auto_blobs.py [--seeds 5] [--extra-seeds 12]
"""

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from _common import write_json
from skcfx import ModalDirectionFinder

DIMS = (2, 16, 64, 512)


def _simplex(k, d, separation):
    """``k`` centres, pairwise ``separation`` apart (a regular simplex in the first k dims)."""
    centres = np.eye(k, d) * separation / np.sqrt(2)
    return centres - centres.mean(axis=0)


def _blobs(rng, n, d, k, separation, scales=None):
    sizes = np.full(k, n // k)
    sizes[: n - sizes.sum()] += 1
    centres = _simplex(k, d, separation) if k > 1 else np.zeros((1, d))
    scales = np.ones(d) if scales is None else scales
    return np.vstack([c + rng.standard_normal((m, d)) * scales for c, m in zip(centres, sizes)])


def _single_mode(rng, n, d, kind):
    if kind == "gaussian":
        return rng.standard_normal((n, d))
    if kind == "correlated":
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        spectrum = np.geomspace(1.0, 10.0, d) ** 0.5
        return (rng.standard_normal((n, d)) * spectrum) @ q.T
    return rng.uniform(-np.sqrt(3), np.sqrt(3), (n, d))  # unit variance


def _n_modes_found(Z, seed):
    """Fit the finder on ``Z`` (class 1) plus a far single blob (class 0); K chosen for class 1."""
    rng = np.random.default_rng(seed + 10_000)
    other = rng.standard_normal((len(Z), Z.shape[1])) + 50.0
    X = np.vstack([Z, other])
    y = np.r_[np.ones(len(Z), int), np.zeros(len(other), int)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finder = ModalDirectionFinder(n_modes="auto", classes=[1], random_state=seed).fit(X, y)
    return finder.n_modes_per_class_[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--extra-seeds", type=int, default=12)
    parser.add_argument("--separation", type=float, default=6.0)
    args = parser.parse_args()
    start = time.perf_counter()
    cases = []

    def record(group, expected, found, **setting):
        cases.append({"group": group, "expected": expected, "found": int(found), **setting})

    for d in DIMS:
        for n in (60, 300):
            for kind in ("isotropic", "anisotropic"):
                scales = None if kind == "isotropic" else np.linspace(0.5, 2.0, d)
                for seed in range(args.seeds):
                    Z = _blobs(np.random.default_rng(seed), n, d, 1, args.separation, scales)
                    record("one_blob", 1, _n_modes_found(Z, seed), d=d, n=n, kind=kind, seed=seed)
        for k in (2, 3):
            for n in (300, 60):
                if n == 60 and d > 64:
                    continue  # K-means cannot find 20-point blobs in 512-d either
                for seed in range(args.seeds):
                    Z = _blobs(np.random.default_rng(seed), n, d, k, args.separation)
                    record(f"blobs_{n}", k, _n_modes_found(Z, seed), d=d, n=n, k=k, seed=seed)
        for kind in ("gaussian", "correlated", "uniform"):
            for n in (40, 150):
                for seed in range(args.extra_seeds):
                    Z = _single_mode(np.random.default_rng(100 + seed), n, d, kind)
                    record("single_mode_extra", 1, _n_modes_found(Z, 100 + seed), d=d, n=n, kind=kind, seed=seed)
        print(f"d={d} done ({time.perf_counter() - start:.0f} s)")

    summary = {}
    for group in sorted({c["group"] for c in cases}):
        rows = [c for c in cases if c["group"] == group]
        right = sum(c["found"] == c["expected"] for c in rows)
        wrong = [c for c in rows if c["found"] != c["expected"]]
        summary[group] = {"right": right, "total": len(rows), "wrong": wrong}
        print(f"{group}: right K in {right} of {len(rows)}")
    write_json("modes_auto_blobs", {
        "settings": {"dims": DIMS, "seeds": args.seeds, "extra_seeds": args.extra_seeds,
                     "separation": args.separation},
        "summary": summary, "cases": cases, "seconds": time.perf_counter() - start,
    })


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
