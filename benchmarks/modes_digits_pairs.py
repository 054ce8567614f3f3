"""Benchmark: mode recovery (ARI) on all 45 digit pairs, by how the positive class is clustered.

For every pair of digits (the positive class of the mixed-class protocol), the latents of the
shipped ``digits16`` DiffAE of its training images are clustered into 2 modes and compared with
the digits (adjusted Rand index). The latents are standardised as ``ModalDirectionFinder`` does
(over all training latents), then clustered by: K-means (the paper's), K-means on raw
latents, on class-standardised latents, on PCA-whitened latents (8, 16 components), on unit-norm
latents, on 2 or 4 principal components, Gaussian mixtures (diagonal, tied, full on 16 principal
components), Ward and average-cosine agglomeration, spectral clustering; and by the library's own
``ModalDirectionFinder`` with either of its clusterings (rows ``finder_*``). No decode is needed,
so every pair is cheap. Summaries: mean, 10% quantile, min with its pair, and the two benchmark
pairs 1/7 and 0/6.

    python benchmarks/modes_digits_pairs.py
    python benchmarks/modes_digits_pairs.py --encoder-steps 5000 --output modes_digits_pairs_5000

With ``--encoder-steps`` / ``--latent-dim`` the DiffAE is another recipe (trained once, cached).
"""

import argparse
import itertools
import time
import warnings

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from _common import add_encoder_args, cached_encoder, digits_split, encoder_overrides, write_json
from skcfx import ModalDirectionFinder


def _km(X):
    return KMeans(2, n_init=10, random_state=0).fit_predict(X)


def _gmm(X, cov):
    return GaussianMixture(2, covariance_type=cov, n_init=5, random_state=0).fit_predict(X)


CLUSTERINGS = {
    "kmeans_standardised": lambda Xs, X: _km(Xs),
    "kmeans_raw": lambda Xs, X: _km(X),
    "kmeans_class_standardised": lambda Xs, X: _km((Xs - Xs.mean(0)) / (Xs.std(0) + 1e-12)),
    "kmeans_pca8_whitened": lambda Xs, X: _km(PCA(8, whiten=True, random_state=0).fit_transform(Xs)),
    "kmeans_pca16_whitened": lambda Xs, X: _km(PCA(16, whiten=True, random_state=0).fit_transform(Xs)),
    "kmeans_unit_norm": lambda Xs, X: _km(Xs / np.linalg.norm(Xs, axis=1, keepdims=True)),
    "gmm_diag": lambda Xs, X: _gmm(Xs, "diag"),
    "gmm_tied": lambda Xs, X: _gmm(Xs, "tied"),
    "gmm_full_pca16": lambda Xs, X: _gmm(PCA(16, random_state=0).fit_transform(Xs), "full"),
    "ward": lambda Xs, X: AgglomerativeClustering(2, linkage="ward").fit_predict(Xs),
    "kmeans_pca2": lambda Xs, X: _km(PCA(2, random_state=0).fit_transform(Xs)),
    "kmeans_pca4": lambda Xs, X: _km(PCA(4, random_state=0).fit_transform(Xs)),
    # Graph-based: clusters that are connected rather than round.
    "spectral_knn10": lambda Xs, X: _spectral(Xs, 10),
    "spectral_knn30": lambda Xs, X: _spectral(Xs, 30),
    "average_cosine": lambda Xs, X: AgglomerativeClustering(2, linkage="average", metric="cosine").fit_predict(Xs),
}


# The library's own path: ModalDirectionFinder on all training latents, the pair as the one class
# with modes (its labels_ on the pair); it standardises over all latents, as Zs above.
FINDER_CLUSTERINGS = {"finder clustering='kmeans' (the paper's)": "kmeans",
                      "finder clustering='gmm' (the default)": "gmm"}


def _finder_labels(Z, in_pair, clustering):
    finder = ModalDirectionFinder(n_modes=2, clustering=clustering, classes=[1], random_state=0)
    return finder.fit(Z, in_pair.astype(int)).labels_[in_pair]


def _spectral(X, n_neighbors):
    return SpectralClustering(2, affinity="nearest_neighbors", n_neighbors=n_neighbors, assign_labels="cluster_qr",
                              random_state=0).fit_predict(X)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_encoder_args(parser)
    parser.add_argument("--clusterings", default=",".join([*CLUSTERINGS, *FINDER_CLUSTERINGS]),
                        help="comma-separated names")
    parser.add_argument("--output", default="modes_digits_pairs", help="JSON name in benchmarks/results/")
    args = parser.parse_args()
    t0 = time.perf_counter()
    X_train, _, y_train, _ = digits_split()
    encoder, encoder_info = cached_encoder(X_train, **encoder_overrides(args))
    Z = encoder.transform(X_train).astype(np.float64)
    scale = Z.std(0)
    Zs = (Z - Z.mean(0)) / np.where(scale > 0, scale, 1.0)
    pairs = list(itertools.combinations(range(10), 2))
    per_pair, summary = {}, {}
    for name in args.clusterings.split(","):
        scores = {}
        for a, b in pairs:
            m = np.isin(y_train, [a, b])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                labels = (_finder_labels(Z, m, FINDER_CLUSTERINGS[name]) if name in FINDER_CLUSTERINGS
                          else CLUSTERINGS[name](Zs[m], Z[m]))
                scores[f"{a},{b}"] = float(adjusted_rand_score(y_train[m], labels))
        x = np.array(list(scores.values()))
        worst = min(scores, key=scores.get)
        per_pair[name] = scores
        summary[name] = {"mean": float(x.mean()), "std": float(x.std()), "q10": float(np.quantile(x, 0.1)),
                         "min": float(x.min()), "min_pair": worst, "max": float(x.max()),
                         "share_ge_0.9": float(np.mean(x >= 0.9)), "pair_1_7": scores["1,7"],
                         "pair_0_6": scores["0,6"]}
        print(f"{name:32s} mean {x.mean():.3f} q10 {summary[name]['q10']:.3f} min {x.min():.3f} ({worst})", flush=True)
    write_json(args.output, {"settings": {"pairs": pairs, "n_modes": 2, "encoder": encoder_info,
                                                   "latent_dim": int(Z.shape[1])},
                                      "wall_time_s": time.perf_counter() - t0,
                                      "summary": summary, "per_pair": per_pair})


if __name__ == "__main__":
    main()
