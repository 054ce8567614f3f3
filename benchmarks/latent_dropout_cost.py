"""Benchmark: what latent dropout (the null latent DiME needs) costs the autoencoder.

skcfx makes DiME's unconditional denoiser from the DiffAE itself: with probability p the latent is
replaced by a learned null latent during training, so one network denoises with and without z
(classifier-free style). This trains the default 16 px digits recipe with p = 0 and p = 0.1 for the
same number of steps, side by side, and compares held-out reconstruction MSE ([-1, 1] units).

    python benchmarks/latent_dropout_cost.py [--max-steps 1000]
"""

import argparse

import numpy as np

from _common import DIGITS_ENCODER, digits_split, write_json
from skcfx import DiffAEEncoder


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--n-eval", type=int, default=200)
    args = parser.parse_args()
    X_train, X_test, _, _ = digits_split()
    X = X_test[: args.n_eval]
    rows = {}
    for p in (0.0, 0.1):
        params = {**DIGITS_ENCODER, "max_steps": args.max_steps, "latent_dropout": p}
        encoder = DiffAEEncoder(**params).fit(X_train)
        Z = encoder.transform(X)
        recon = encoder.inverse_transform(Z, noise=encoder.encode_stochastic(X, Z))
        rows[str(p)] = {"mse_inverted_noise": float(np.mean((2 * recon - 2 * X) ** 2)),
                        "fit_time_s": encoder.fit_time_s_,
                        "final_loss_mean_last_100": float(np.mean(encoder.loss_history_[-100:]))}
        print(p, rows[str(p)])
    write_json("latent_dropout_cost", {
        "settings": {**DIGITS_ENCODER, "max_steps": args.max_steps, "n_eval": len(X)},
        "by_latent_dropout": rows,
        "mse_ratio_dropout_to_none": rows["0.1"]["mse_inverted_noise"] / rows["0.0"]["mse_inverted_noise"],
    })


if __name__ == "__main__":
    main()
