"""Train a diffusion autoencoder on a folder of images, in one process or many (DDP), and save it.

The same script runs alone or under ``torchrun``; started by torchrun, ``fit`` trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs), every process reading its own share of the
folder, and only rank 0 writes the checkpoint and the saved model::

    # one process (a GPU if there is one, else the CPU)
    python examples/train_ddp.py /data/faces --image-size 128 --out faces.pt
    # every GPU of this machine (here 4), same total batch
    torchrun --standalone --nproc_per_node 4 examples/train_ddp.py /data/faces --image-size 128 --out faces.pt
    # a tiny run on the CPU with 2 processes (bundled digits, seconds)
    torchrun --standalone --nproc_per_node 2 examples/train_ddp.py --quick

Stopped (Ctrl-C, a crash, a full disk), the same command continues from ``<out>.ckpt``.
"""

import argparse
import tempfile
from pathlib import Path

from skcfx import DiffAEEncoder
from skcfx.diffusion import distributed


def _quick_data():
    """The bundled digits as uint8 (a stand-in for a folder; the same on every process)."""
    from skcfx.datasets import load_digits_images

    X, _ = load_digits_images(image_size=16)
    return (X * 255).round().astype("uint8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", help="images (any layout below it; all the same size)")
    parser.add_argument("--image-size", type=int, default=None, help="checked against the files")
    parser.add_argument("--architecture", default="auto", help="'auto', 'ffhq64', 'ffhq128', ...")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=64, help="total over all processes")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--out", default="encoder.pt")
    parser.add_argument("--quick", action="store_true", help="tiny run on the bundled digits")
    args = parser.parse_args(argv)
    if args.quick:
        X, out = _quick_data(), Path(tempfile.gettempdir()) / "skcfx_train_ddp_quick.pt"
        params = dict(max_steps=20, batch_size=16, learning_rate=1e-3, device="cpu", encode_steps=5, decode_steps=5)
    elif args.folder is None:
        parser.error("give a folder of images (or --quick)")
    else:
        X, out = args.folder, Path(args.out)
        params = dict(max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate)
    encoder = DiffAEEncoder(
        image_size=args.image_size, architecture=args.architecture, precision=args.precision,
        compile=args.compile, random_flip=not args.quick, random_state=0, verbose=True,
        checkpoint_path=out.with_suffix(".ckpt"), checkpoint_every=1000, **params)
    encoder.fit(X)  # DDP when started by torchrun
    encoder.save(out)  # written by rank 0; every process returns once the file is there
    if distributed.world().is_main:
        print(f"{encoder.n_steps_} steps in {encoder.fit_time_s_:.0f} s on {distributed.world().size} "
              f"process(es); saved {out}")
    return encoder


if __name__ == "__main__":
    main()
