"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

``OUT``: both parts in one launch (one interpreter start per rank):

- torch-level :func:`train_diffae` under DDP -- a full run, and the same run stopped half-way,
  checkpointed by rank 0 and resumed from the file -- each rank saving what it ended with;
- the estimator, ``DiffAEEncoder(...).fit(X)`` then ``save()``, as a user script would, and a fit
  resumed from its ``checkpoint_path`` under torchrun.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from skcfx.diffusion import distributed


def _net():
    from skcfx.diffusion.checkpoints import create_net

    torch.manual_seed(0)
    return create_net(dict(image_size=8, in_channels=1, model_channels=8, channel_mult=[1, 2],
                           enc_channel_mult=[1, 2], attention_resolutions=[4], embed_channels=16,
                           latent_dim=4, null_latent=True))


def train(out):
    from skcfx.diffusion.training import load_train_checkpoint, train_diffae

    from test_training import make_images  # this script's folder is on sys.path

    distributed.init_from_env(torch.device("cpu"))
    world = distributed.world()
    images = make_images(n=48)
    run = dict(batch_size=8, learning_rate=1e-2, latent_dropout=0.2, device="cpu", random_flip=True)
    full = train_diffae(_net(), images, max_steps=30, generator=torch.Generator().manual_seed(1), **run)
    ckpt = out / "train.ckpt"
    train_diffae(_net(), images, max_steps=15, generator=torch.Generator().manual_seed(1),
                 checkpoint_path=ckpt, **run)
    distributed.barrier()
    resumed = train_diffae(_net(), images, max_steps=30, state=load_train_checkpoint(ckpt), **run)
    torch.save({"world": world.size, "full": full.to_dict(), "resumed": resumed.to_dict()},
               out / f"rank{world.rank}.pt")


def fit(out):
    from skcfx import DiffAEEncoder

    rng = np.random.default_rng(0)
    X = (rng.random((40, 8, 8, 1)) * 255).astype(np.uint8)

    def encoder(max_steps, **params):
        return DiffAEEncoder(architecture=dict(model_channels=8, channel_mult=(1, 2), enc_channel_mult=(1, 2),
                                               attention_resolutions=(4,), embed_channels=16, latent_dim=4),
                             max_steps=max_steps, batch_size=8, learning_rate=1e-2, encode_steps=3, decode_steps=3,
                             random_state=0, device="cpu", **params)

    straight = encoder(24).fit(X)
    straight.save(out / "encoder.pt")
    encoder(12, checkpoint_path=out / "fit.ckpt", checkpoint_every=5).fit(X)
    distributed.barrier()  # rank 0 has written the checkpoint of step 12
    resumed = encoder(24, checkpoint_path=out / "fit.ckpt", checkpoint_every=5).fit(X)
    world = distributed.world()
    torch.save({"world": world.size, "weights": straight.net_.state_dict(), "loss": straight.loss_history_.tolist(),
                "resumed_weights": resumed.net_.state_dict(), "resumed_loss": resumed.loss_history_.tolist(),
                "z": torch.from_numpy(straight.transform(X[:4]))}, out / f"fit_rank{world.rank}.pt")


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for name, part in (("train", train), ("fit", fit)):
        (root / name).mkdir(exist_ok=True)
        part(root / name)
