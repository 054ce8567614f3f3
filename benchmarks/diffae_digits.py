"""Benchmark: the default DiffAE recipe on the bundled digits at 16 px.

Trains the encoder (and caches it for the other benchmarks), then measures on held-out digits:
reconstruction MSE in [-1, 1] units with the inverted noise x_T versus random noise, and
throughput of encode (semantic + inversion) and decode.

It also measures *semantic control*, what DifCluE relies on, for the recipe at several training
lengths side by side (``--compare-steps``): for pairs of held-out digits (a, b) with different
labels, decode b's semantic latent with a's inverted noise; an SVC on pixels (trained on the 10
labels) says whether the result shows b's digit (the latent decides) or a's (the noise decides).

    python benchmarks/diffae_digits.py [--max-steps 10000] [--steps 10 20 50] [--compare-steps 2500 5000 10000]
"""

import argparse
import time

import numpy as np
import torch
from sklearn.svm import SVC

from _common import CACHE, DIGITS_ENCODER, cached_encoder, digits_split, semantic_control, write_json
from skcfx import DiffAEEncoder


def mse_pm1(a, b):
    """Mean squared error in the network's [-1, 1] units."""
    return float(np.mean((2 * a - 2 * b) ** 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-steps", type=int, default=DIGITS_ENCODER["max_steps"])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--retrain", action="store_true", help="train even if a cached model exists")
    parser.add_argument("--compare-steps", type=int, nargs="*", default=[2500, 5000, 10000],
                        help="training lengths whose semantic control is compared (trained if not cached)")
    args = parser.parse_args()

    X_train, X_test, y_train, y_test = digits_split()
    params = {**DIGITS_ENCODER, "max_steps": args.max_steps}
    if args.retrain:
        encoder = DiffAEEncoder(verbose=True, **params).fit(X_train)
        CACHE.mkdir(parents=True, exist_ok=True)
        encoder.save(CACHE / f"encoder_digits16_{args.max_steps}.pt")
        cached = False
    else:  # training wall time is the one recorded in the saved model when it was trained
        encoder, info = cached_encoder(X_train, max_steps=args.max_steps)
        cached = info["cached"]
    X = X_test[: args.n_eval]

    rows = []
    for steps in args.steps:
        encoder.set_params(encode_steps=steps, decode_steps=steps)
        t0 = time.perf_counter()
        Z = encoder.transform(X)
        noise = encoder.encode_stochastic(X, Z)
        t_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        recon = encoder.inverse_transform(Z, noise=noise)
        t_decode = time.perf_counter() - t0
        random = encoder.inverse_transform(Z)  # noise from random_state
        rows.append({
            "encode_steps": steps, "decode_steps": steps,
            "mse_inverted_noise": mse_pm1(recon, X), "mse_random_noise": mse_pm1(random, X),
            "encode_images_per_s": len(X) / t_encode, "decode_images_per_s": len(X) / t_decode,
        })
        print(rows[-1])
    oracle = SVC(gamma="scale").fit(X_train.reshape(len(X_train), -1), y_train)
    control = []
    for n_steps in args.compare_steps:
        other, other_info = cached_encoder(X_train, max_steps=n_steps)
        other.set_params(encode_steps=20, decode_steps=20)
        read = lambda images: oracle.predict(images.reshape(len(images), -1))  # noqa: E731
        control.append({"max_steps": n_steps,
                        "training_wall_time_s": other_info.get("total_training_s", other.fit_time_s_),
                        "provenance": other_info.get("provenance"),
                        **semantic_control(other, read, X_test, y_test)})
        print(control[-1])
    n_params = sum(p.numel() for p in encoder.net_.parameters())
    write_json("diffae_digits", {
        "settings": {**params, "n_train": len(X_train), "n_eval": len(X), "image_size": 16,
                     "architecture": encoder.config_.to_dict(), "n_parameters": n_params,
                     "torch_threads": torch.get_num_threads()},
        "training_wall_time_s": encoder.fit_time_s_,
        "encoder_from_cache": cached,
        "final_loss_mean_last_100": float(np.mean(encoder.loss_history_[-100:])),
        "reconstruction": rows,
        "semantic_control": control,
    })


if __name__ == "__main__":
    main()
