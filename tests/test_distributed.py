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

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
    pytest.mark.slow,  # one torchrun launch of two processes (~1 min on 2 busy cores)
]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Launch the script once; what each rank wrote, per part ('train', 'fit')."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    load = lambda path: torch.load(path, weights_only=True)  # noqa: E731
    return {"train": [load(out / "train" / f"rank{r}.pt") for r in (0, 1)],
            "fit": [load(out / "fit" / f"fit_rank{r}.pt") for r in (0, 1)], "out": out}


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_ddp_ranks_agree_loss_falls_and_resume_is_exact(ranks):
    rank0, rank1 = ranks["train"]
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
    assert sorted(p.name for p in (ranks["out"] / "train").iterdir()) == ["rank0.pt", "rank1.pt", "train.ckpt"]


def test_estimator_fit_under_torchrun_saves_once_and_loads_in_a_plain_process(ranks):
    import numpy as np

    from skcfx import DiffAEEncoder

    rank0, rank1 = ranks["fit"]
    tmp_path = ranks["out"] / "fit"
    assert rank0["world"] == rank1["world"] == 2
    assert _equal(rank0["weights"], rank1["weights"]) and rank0["loss"] == rank1["loss"]
    losses = rank0["loss"]
    assert len(losses) == 24 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    # The checkpoint (rank 0 only) resumed under torchrun: the same run as the uninterrupted one.
    assert _equal(rank0["resumed_weights"], rank0["weights"]) and rank0["resumed_loss"] == losses
    # Rank 0 alone wrote the files; the saved model loads here, without torchrun.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.pt", "fit.ckpt", "fit_rank0.pt", "fit_rank1.pt"]
    loaded = DiffAEEncoder.load(tmp_path / "encoder.pt", device="cpu")
    assert loaded.n_steps_ == 24
    rng = np.random.default_rng(0)
    X = (rng.random((40, 8, 8, 1)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded.transform(X[:4]), rank0["z"].numpy())
