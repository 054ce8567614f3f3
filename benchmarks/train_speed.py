"""Benchmark: training and inference images/s on this CPU at 16, 32 and 64 px; DDP (2 gloo
processes) against one process at the same total batch.

Networks are the default (``architecture='auto'``) RGB DiffAEs for each size, untrained (speed
does not depend on the weights). Training: ``train_diffae`` on uint8 images in memory, timed
after warm-up steps. Inference: the public ``DiffAEEncoder`` methods on a few hundred images,
``encode_steps = decode_steps = 10``. DDP: ``benchmarks/_ddp_speed_child.py`` under ``torchrun``,
1 process x 1 thread, 1 process x 2 threads, 2 processes x 1 thread (global batch 32 each time).

    python benchmarks/train_speed.py [--sizes 16 32 64] [--steps 20] [--skip-ddp]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import write_json

HERE = Path(__file__).resolve().parent


def _train_speed(size, batch_size, steps, warmup=3):
    from skcfx.diffusion.checkpoints import create_net, default_config_for
    from skcfx.diffusion.training import train_diffae

    torch.manual_seed(0)
    net = create_net(default_config_for(size, 3, null_latent=True))
    images = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8)
    stamps = []
    train_diffae(net, images, max_steps=warmup + steps, batch_size=batch_size, learning_rate=1e-4,
                 latent_dropout=0.1, device="cpu", generator=torch.Generator().manual_seed(0),
                 callback=lambda info: stamps.append(time.perf_counter()))
    per_step = (stamps[-1] - stamps[warmup - 1]) / steps
    return {"n_parameters": sum(p.numel() for p in net.parameters()), "batch_size": batch_size,
            "steps_timed": steps, "s_per_step": per_step, "train_images_per_s": batch_size / per_step}


def _inference_speed(size, n_images, n_steps=10):
    from skcfx import DiffAEEncoder

    rng = np.random.default_rng(0)
    X = (rng.random((n_images, size, size, 3)) * 255).astype(np.uint8)
    encoder = DiffAEEncoder(max_steps=0, encode_steps=n_steps, decode_steps=n_steps, inference_batch_size=64,
                            random_state=0, device="cpu").fit(X[:8])
    encoder.transform(X[:8])  # warm-up
    timings = {}
    start = time.perf_counter()
    Z = encoder.transform(X)
    timings["encode_images_per_s"] = n_images / (time.perf_counter() - start)
    start = time.perf_counter()
    noise = encoder.encode_stochastic(X, Z)
    timings["invert_images_per_s"] = n_images / (time.perf_counter() - start)
    start = time.perf_counter()
    encoder.inverse_transform(Z, noise)
    timings["decode_images_per_s"] = n_images / (time.perf_counter() - start)
    timings.update(n_images=n_images, ddim_steps=n_steps)
    return timings


def _precision_effect(n_images=200):
    """bf16 vs fp32 inference of the cached 16 px digits DiffAE: reconstruction error and speed."""
    from _common import CACHE, digits_split

    from skcfx import DiffAEEncoder

    path = CACHE / "encoder_digits16_5000.pt"
    if not path.is_file():
        return None
    _, X_test, _, _ = digits_split()
    X = X_test[:n_images]
    rows, reference = [], None
    for precision in ("fp32", "bf16"):
        encoder = DiffAEEncoder.from_pretrained(path, device="cpu", precision=precision)
        start = time.perf_counter()
        recon = encoder.reconstruct(X)
        seconds = time.perf_counter() - start
        reference = recon if reference is None else reference
        rows.append({"precision": precision, "reconstruction_mse": float(np.mean((2 * recon - 2 * X) ** 2)),
                     "mse_to_fp32_reconstruction": float(np.mean((2 * recon - 2 * reference) ** 2)),
                     "images_per_s": n_images / seconds})
    return {"encoder": str(path.name), "n_images": n_images, "ddim_steps": "20 / 20", "rows": rows}


def _ddp_speed(nproc, threads, size, batch_size, steps):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(HERE / "_ddp_speed_child.py"), "--size", str(size), "--batch-size", str(batch_size),
           "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    row = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    return {"processes": nproc, "threads_per_process": threads, **row}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ddp-size", type=int, default=32)
    parser.add_argument("--skip-ddp", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for size in args.sizes:
        row = {"image_size": size, **_train_speed(size, args.batch_size, args.steps),
               **_inference_speed(size, n_images=256 if size <= 32 else 64)}
        rows.append(row)
        print(row, flush=True)
    precision = _precision_effect()
    print(precision, flush=True)
    ddp = []
    if not args.skip_ddp:
        for nproc, threads in ((1, 1), (1, 2), (2, 1)):
            ddp.append(_ddp_speed(nproc, threads, args.ddp_size, args.batch_size, args.steps))
            print(ddp[-1], flush=True)
    write_json("train_speed", {
        "settings": {"batch_size": args.batch_size, "steps_timed": args.steps, "threads": 1,
                     "ddp_image_size": args.ddp_size, "architecture": "auto (RGB), latent dropout 0.1"},
        "rows": rows,
        "ddp": ddp,
        "bf16_inference_digits16": precision,
        "note": "2-core shared CPU, contended by other jobs: indicative seconds; DDP rows use gloo",
    })


if __name__ == "__main__":
    main()
