"""Benchmark (CUDA only): images/s for training, encode, invert and decode with the published
ffhq128 architecture at 64 and 128 px, in fp32 vs bf16 vs bf16 + torch.compile; peak GPU memory;
and what the precision costs in reconstruction error.

Random uint8 images (speed does not depend on the pixels or the weights). Training:
``train_diffae`` -- the loop ``DiffAEEncoder.fit`` runs, with its precision / compile options --
timed per step after ``--warmup-steps`` (compilation and autotuning happen there). Inference:
the estimator's ``transform`` / ``encode_stochastic`` / ``inverse_transform`` on ``--n-images``
images with ``--ddim-steps`` steps, after one warm-up batch through each. Reconstruction error:
the same briefly trained fp32 weights run in each precision, MSE against the fp32 result.

    python benchmarks/gpu_speed.py [--sizes 64 128] [--batch-size 64] [--train-steps 30]
    python benchmarks/gpu_speed.py --dry-run     # the same code on the CPU, tiny network, no compile

``--dry-run`` checks the script itself where there is no GPU: tiny sizes and network, fp32 and
bf16 only, results to ``results/gpu_speed_dry_run.json`` (not the README's GPU figures).
"""

import argparse
import time

import numpy as np
import torch

from _common import write_json

VARIANTS = (("fp32", False), ("bf16", False), ("bf16", True))


DEVICE = "cuda"
ARCHITECTURE = "ffhq128"
TINY = dict(model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2, 2), attention_resolutions=(8,),
            embed_channels=32, latent_dim=16)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _peak_gb():
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else float("nan")


def _reset_peak():
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _encoder(size, precision, compile, args, **params):
    from skcfx import DiffAEEncoder

    return DiffAEEncoder(architecture=ARCHITECTURE, image_size=size, precision=precision, compile=compile,
                         batch_size=args.batch_size, inference_batch_size=args.batch_size,
                         encode_steps=args.ddim_steps, decode_steps=args.ddim_steps, latent_dropout=0.0,
                         learning_rate=1e-4, random_state=0, device=DEVICE, **params)


def _timed(fn):
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - start


def _train_images_per_s(size, precision, compile, X, args):
    """Training images/s of ``train_diffae`` (what ``fit`` runs), timed per step after warm-up."""
    from skcfx.diffusion.training import train_diffae

    net = _encoder(size, precision, compile, args).initialize_module((size, size, 3), seed=0)
    images = torch.from_numpy(np.ascontiguousarray(X.transpose(0, 3, 1, 2)))  # uint8, as fit keeps it
    stamps = []  # the loop syncs the device once per step (the loss), so host time is step time
    train_diffae(net, images, max_steps=args.warmup_steps + args.train_steps, batch_size=args.batch_size,
                 learning_rate=1e-4, device=DEVICE, precision=precision, compile=compile,
                 generator=torch.Generator().manual_seed(0), callback=lambda info: stamps.append(time.perf_counter()))
    return args.train_steps * args.batch_size / (stamps[-1] - stamps[args.warmup_steps - 1])


def _inference(encoder, X, batch_size):
    # Warm-up with one full batch through every call: compilation and cuDNN autotuning happen here.
    warm = X[:batch_size]
    encoder.inverse_transform(encoder.transform(warm), encoder.encode_stochastic(warm))
    Z, t_encode = _timed(lambda: encoder.transform(X))
    noise, t_invert = _timed(lambda: encoder.encode_stochastic(X, Z))
    images, t_decode = _timed(lambda: encoder.inverse_transform(Z, noise))
    n = len(X)
    return {"encode_images_per_s": n / t_encode, "invert_images_per_s": n / t_invert,
            "decode_images_per_s": n / t_decode}, images


def _variant(size, precision, compile, X, args):
    _reset_peak()
    row = {"image_size": size, "precision": precision, "compile": compile,
           "train_images_per_s": _train_images_per_s(size, precision, compile, X, args),
           "train_peak_gpu_memory_gb": _peak_gb()}
    _reset_peak()
    encoder = _encoder(size, precision, compile, args, max_steps=0).fit(X[:8])  # untrained: speed only
    timings, _ = _inference(encoder, X[: args.n_images], args.batch_size)
    row.update(timings, inference_peak_gpu_memory_gb=_peak_gb())
    return row


def _trained_reference(size, X, args):
    """A briefly trained fp32 encoder, saved: the weights every precision is compared with."""
    encoder = _encoder(size, "fp32", False, args, max_steps=args.warmup_steps + args.train_steps).fit(X)
    return encoder.save(f"{args.out}_{size}.pt")


def _precision_error(size, X, args, reference_path):
    """MSE in [0, 1] units between fp32 and each precision's reconstruction with the same weights."""
    from skcfx import DiffAEEncoder

    out, reference = {}, None
    for precision, compile in VARIANTS:
        if compile and DEVICE != "cuda":
            continue
        encoder = DiffAEEncoder.from_pretrained(reference_path, precision=precision, compile=compile,
                                                device=DEVICE, encode_steps=args.ddim_steps,
                                                decode_steps=args.ddim_steps)
        recon = encoder.reconstruct(X[: args.n_images])
        if reference is None:
            reference = recon
        out[f"{precision}{'+compile' if compile else ''}"] = float(np.mean((recon - reference) ** 2))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--out", default="/tmp/skcfx_gpu_speed")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny network, no compile: checks the script")
    args = parser.parse_args()
    global DEVICE, ARCHITECTURE
    variants = VARIANTS
    if args.dry_run:
        DEVICE, ARCHITECTURE, variants = "cpu", TINY, VARIANTS[:2]
        args.sizes, args.batch_size, args.warmup_steps, args.train_steps = [16], 8, 1, 2
        args.n_images, args.ddim_steps = 16, 3
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py needs a CUDA device (or --dry-run); nothing was measured.")
    rng = np.random.default_rng(0)
    rows, errors = [], {}
    for size in args.sizes:
        X = (rng.random((max(args.n_images, 4 * args.batch_size), size, size, 3)) * 255).astype(np.uint8)
        for precision, compile in variants:
            try:
                rows.append(_variant(size, precision, compile, X, args))
            except torch.cuda.OutOfMemoryError as exc:  # record it and go on with the other variants
                rows.append({"image_size": size, "precision": precision, "compile": compile, "error": repr(exc)[:300]})
            print(rows[-1], flush=True)
        errors[size] = _precision_error(size, X, args, _trained_reference(size, X, args))
        print(size, errors[size], flush=True)
    write_json("gpu_speed_dry_run" if args.dry_run else "gpu_speed", {
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"architecture": ARCHITECTURE},
        "rows": rows,
        "reconstruction_mse_vs_fp32": errors,
        "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "none (dry run on the CPU)",
    })


if __name__ == "__main__":
    main()
