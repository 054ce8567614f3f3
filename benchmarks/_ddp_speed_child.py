"""Child of train_speed.py, run under ``torchrun``: DDP training steps/s (rank 0 prints JSON)."""

import argparse
import json
import time

import torch

from skcfx.diffusion import distributed
from skcfx.diffusion.checkpoints import create_net, default_config_for
from skcfx.diffusion.training import train_diffae


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    distributed.init_from_env(torch.device("cpu"))
    world = distributed.world()
    torch.manual_seed(0)
    net = create_net(default_config_for(args.size, 3, null_latent=True))
    images = torch.randint(0, 256, (256, 3, args.size, args.size), dtype=torch.uint8)
    stamps = []
    train_diffae(net, images, max_steps=args.warmup + args.steps, batch_size=args.batch_size,
                 latent_dropout=0.1, device="cpu", generator=torch.Generator().manual_seed(0),
                 callback=lambda info: stamps.append(time.perf_counter()))
    per_step = (stamps[-1] - stamps[args.warmup - 1]) / args.steps
    if world.is_main:
        print(json.dumps({"image_size": args.size, "global_batch": args.batch_size, "world_size": world.size,
                          "s_per_step": per_step, "train_images_per_s": args.batch_size / per_step}))


if __name__ == "__main__":
    main()
