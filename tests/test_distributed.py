"""DDP training under ``torchrun --nproc_per_node 2`` with gloo on the CPU (tiny models).

Each test launches tests/_ddp_script.py in two processes and checks what the ranks wrote.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch.distributed as dist

SCRIPT = Path(__file__).with_name("_ddp_script.py")

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _torchrun(mode, out, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), mode, str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [torch.load(out / f"{prefix}rank{r}.pt", weights_only=True)
            for prefix in ([""] if mode == "train" else ["fit_"]) for r in (0, 1)]


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_ddp_ranks_agree_loss_falls_and_resume_is_exact(tmp_path):
    rank0, rank1 = _torchrun("train", tmp_path)
    assert rank0["world"] == rank1["world"] == 2
    full0, full1 = rank0["full"], rank1["full"]
    # Identical by construction: the optimizer states (never broadcast) agree bit for bit.
    for key in ("net_state", "ema_state", "optimizer_state", "loss_history", "generator_state"):
        assert _equal(full0[key], full1[key]), key
    # Each rank read its own half of every batch of 8.
    assert full0["samples_seen"] == 30 * 4
    losses = full0["loss_history"]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    # Stopped at 15, checkpointed by rank 0, resumed from the file on both ranks: the same run.
    for key in ("net_state", "ema_state", "optimizer_state", "loss_history", "generator_state"):
        assert _equal(full0[key], rank0["resumed"][key]), key
        assert _equal(full1[key], rank1["resumed"][key]), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.pt", "rank1.pt", "train.ckpt"]
