"""Tests for skcfx.diffusion.training: loss, EMA, exact resume, faults and checkpoints."""

import math
import os
import signal
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skcfx.diffusion.training import (
    EMA,
    TrainState,
    TrainingDivergedError,
    TrainingInterrupted,
    load_train_checkpoint,
    save_train_checkpoint,
    train_diffae,
)


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: these nets are tiny, and on a busy 2-core machine OpenMP threads
    waiting for each other make a 0.1 ms convolution take tens of milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyDiffAE(nn.Module):
    """A few-hundred-parameter stand-in for DiffAENet with the same call contract (and dropout)."""

    def __init__(self, channels=1, latent_dim=4, width=8, null_latent=False, dropout=0.1):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, latent_dim),
        )
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.time_proj = nn.Linear(2, width)
        self.cond_proj = nn.Linear(latent_dim, width)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        if null_latent:
            self.null_latent = nn.Parameter(torch.zeros(latent_dim))

    def encode(self, x_0):
        return self.encoder(x_0)

    def forward(self, x_t, t, cond=None):
        if cond is None:
            cond = self.null_latent.expand(x_t.shape[0], -1)
        phase = t.float() / 1000.0 * math.pi
        t_emb = self.time_proj(torch.stack([phase.cos(), phase.sin()], dim=1))
        h = F.silu(self.conv_in(x_t) + t_emb[:, :, None, None])
        h = h * (1 + self.cond_proj(cond)[:, :, None, None])
        self.calls += 1
        return self.conv_out(self.dropout(h))


class NaNAtCall(TinyDiffAE):
    """Returns NaN on its ``bad_call``-th forward (1-based)."""

    def __init__(self, bad_call, **kwargs):
        super().__init__(**kwargs)
        self.bad_call = bad_call

    def forward(self, x_t, t, cond=None):
        out = super().forward(x_t, t, cond)
        return out * float("nan") if int(self.calls) == self.bad_call else out


class InterruptAtCall(TinyDiffAE):
    """Raises KeyboardInterrupt in the middle of its ``bad_call``-th forward (once)."""

    def __init__(self, bad_call, **kwargs):
        super().__init__(**kwargs)
        self.bad_call = bad_call

    def forward(self, x_t, t, cond=None):
        out = super().forward(x_t, t, cond)
        if int(self.calls) == self.bad_call:
            self.bad_call = -1
            raise KeyboardInterrupt
        return out


def make_images(n=24, size=8, seed=0):
    """Blobs at random positions: structured enough for the loss to fall, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    centres = torch.rand(n, 2, generator=g) * (size - 1)
    d2 = (coords[None, :, None] - centres[:, 0, None, None]) ** 2 + (
        coords[None, None, :] - centres[:, 1, None, None]) ** 2
    return (2 * torch.exp(-d2 / 4.0) - 1).unsqueeze(1)


def make_net(cls=TinyDiffAE, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(**kwargs)


def train(net, max_steps, seed=0, **kwargs):
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("learning_rate", 1e-2)
    return train_diffae(net, make_images(), max_steps=max_steps,
                        generator=torch.Generator().manual_seed(seed), device="cpu", **kwargs)


def assert_tensors_equal(a, b):
    """Bit-exact equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_tensors_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tensors_equal(x, y)
    else:
        assert a == b


def assert_states_equal(a, b):
    for name in ("step", "loss_history", "net_state", "optimizer_state", "ema_state", "generator_state"):
        assert_tensors_equal(getattr(a, name), getattr(b, name))


def weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Learning


def test_loss_falls_and_encoder_learns():
    net = make_net()
    encoder_before = [p.detach().clone() for p in net.encoder.parameters()]
    state = train(net, 150, batch_size=16)
    assert state.step == 150 and len(state.loss_history) == 150
    assert all(math.isfinite(v) for v in state.loss_history)
    first, last = state.loss_history[:20], state.loss_history[-20:]
    assert sum(last) / 20 < 0.7 * sum(first) / 20
    # The encoder has no loss of its own: it can only have moved through the denoising loss.
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, net.encoder.parameters()))


def test_state_is_cpu_copy_and_ema_weights_load():
    net = make_net()
    state = train(net, 5)
    assert_tensors_equal(state.net_state, weights(net))
    # Copies, not views: training further must not change a state already returned.
    kept = {k: v.clone() for k, v in state.net_state.items()}
    train(net, 8, state=state)
    assert_tensors_equal(state.net_state, kept)
    fresh = make_net(seed=1)
    fresh.load_state_dict(state.ema_weights)
    assert_tensors_equal(weights(fresh), state.ema_weights)


def test_restores_train_mode_and_global_rng():
    net = make_net().eval()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(net, 3)
    assert torch.equal(torch.rand(3), expected)
    assert not net.training


def test_verbose_shows_loss(capsys):
    train(make_net(), 10, verbose=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "10/10" in err


def test_callback_sees_every_step():
    seen = []
    state = train(make_net(), 4, callback=lambda info: seen.append((info["step"], info["loss"])))
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    assert [loss for _, loss in seen] == state.loss_history


def test_zero_remaining_steps_is_a_no_op():
    net = make_net()
    state = train(net, 4)
    before = weights(net)
    again = train(net, 4, state=state)
    assert again.step == 4
    assert_tensors_equal(weights(net), before)


# ---------------------------------------------------------------------------------------------
# EMA


def test_ema_warmup_schedule_and_copy_to():
    net = nn.Linear(3, 2)
    ema = EMA(net, decay=0.99)
    start = weights(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.update(net)
    # First update: 0.1 * old + 0.9 * new.
    assert torch.allclose(ema.weights["weight"], start["weight"] + 0.9)
    assert ema.current_decay() == pytest.approx(2 / 11)
    for _ in range(5000):
        ema.update(net)
    assert ema.current_decay() == pytest.approx(0.99)
    assert torch.allclose(ema.weights["weight"], net.weight, atol=1e-6)
    other = nn.Linear(3, 2)
    ema.copy_to(other)
    assert_tensors_equal(weights(other), ema.weights)


def test_ema_without_warmup_and_integer_buffers():
    net = nn.BatchNorm1d(2)
    ema = EMA(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.num_batches_tracked.fill_(7)
    ema.update(net)
    assert torch.allclose(ema.weights["weight"], torch.full((2,), 2.0))
    assert int(ema.weights["num_batches_tracked"]) == 7


def test_ema_state_dict_roundtrip():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.mul_(2)
    ema.update(net)
    saved = ema.state_dict()
    other = EMA(nn.Linear(2, 2), decay=0.9)
    other.load_state_dict(saved)
    assert other.num_updates == 1
    assert_tensors_equal(other.weights, ema.weights)
    with pytest.raises(ValueError, match="differing keys"):
        EMA(nn.Linear(2, 2, bias=False)).load_state_dict(saved)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


# ---------------------------------------------------------------------------------------------
# Exact resume


def test_resume_is_bit_exact():
    full = train(make_net(), 20)
    first = train(make_net(), 10)
    # A different generator object and a freshly built net: everything must come from the state.
    resumed = train(make_net(seed=5), 20, seed=99, state=first)
    assert_states_equal(resumed, full)
    assert first.step == 10  # the state passed in is left as it was


def test_resume_from_checkpoint_is_bit_exact(tmp_path):
    path = tmp_path / "train.ckpt"
    full = train(make_net(), 12)
    with pytest.raises(TrainingInterrupted):  # checkpoints at step 5, then at the interrupt (7)
        train(make_net(), 12, checkpoint_path=path, checkpoint_every=5,
              callback=lambda info: _stop_at(info, 7))
    state = load_train_checkpoint(path)
    assert state.step == 7
    resumed = train(make_net(seed=3), 12, state=state)
    assert_states_equal(resumed, full)


def _stop_at(info, step):
    if info["step"] == step:
        raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------
# Faults


def test_nan_loss_stops_with_last_good_weights():
    reference = make_net()
    train(reference, 6)
    net = make_net(NaNAtCall, bad_call=7)
    with pytest.raises(TrainingDivergedError, match="step 7") as info:
        train(net, 20)
    assert isinstance(info.value, FloatingPointError)
    assert info.value.step == 7 and info.value.state.step == 6
    expected = weights(reference)
    expected.pop("calls")
    got = weights(net)
    got.pop("calls")
    assert_tensors_equal(got, expected)
    assert all(p.grad is None for p in net.parameters())


def test_nan_gradient_stops_before_the_update():
    net = make_net()
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 3 else grad

    net.conv_in.weight.register_hook(poison)
    with pytest.raises(TrainingDivergedError, match="gradient norm") as info:
        train(net, 10)
    assert info.value.step == 3
    assert_tensors_equal(weights(net), info.value.state.net_state)
    assert all(torch.isfinite(v).all() for v in info.value.state.net_state.values())


def test_keyboard_interrupt_from_callback_then_resume():
    full = train(make_net(), 15)
    net = make_net()
    with pytest.raises(TrainingInterrupted) as info:
        train(net, 15, callback=lambda info: _stop_at(info, 6))
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.state.step == 6
    resumed = train(net, 15, seed=42, state=info.value.state)
    assert_states_equal(resumed, full)


def test_keyboard_interrupt_inside_a_step_then_resume():
    # Interrupted mid-forward of step 5: step 5 is not counted and is redone on resume.
    reference = make_net(InterruptAtCall, bad_call=-1)
    full = train(reference, 9)
    net = make_net(InterruptAtCall, bad_call=5)
    with pytest.raises(TrainingInterrupted) as info:
        train(net, 9)
    assert info.value.state.step == 4
    resumed = train(net, 9, state=info.value.state)
    for name in ("loss_history", "optimizer_state", "generator_state"):
        assert_tensors_equal(getattr(resumed, name), getattr(full, name))
    got, expected = weights(net), weights(reference)
    got.pop("calls"), expected.pop("calls")
    assert_tensors_equal(got, expected)


@pytest.fixture
def python_sigint_handler():
    """Python's own Ctrl-C handler for the test: a process started in the background by a
    non-interactive shell inherits SIGINT *ignored*, and then no signal ever arrives."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_real_sigint_leaves_a_resumable_state(python_sigint_handler):
    full = train(make_net(), 12)

    def send_sigint(info):
        if info["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs at some point in the next bytecodes

    net = make_net()
    with pytest.raises(TrainingInterrupted) as info:
        train(net, 12, callback=send_sigint)
    assert 4 <= info.value.state.step < 12
    resumed = train(net, 12, state=info.value.state)
    assert_states_equal(resumed, full)


def test_defer_sigint_holds_ctrl_c_until_the_block_ends(python_sigint_handler):
    from skcfx.diffusion.training import _defer_sigint

    reached = False
    with pytest.raises(KeyboardInterrupt):
        with _defer_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            reached = True
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------------------------------
# Latent dropout


def test_latent_dropout_trains_the_null_latent():
    net = make_net(null_latent=True)
    train(net, 5, latent_dropout=0.5)
    assert net.null_latent.abs().sum() > 0
    kept = make_net(null_latent=True)
    train(kept, 5)
    assert kept.null_latent.abs().sum() == 0


def test_latent_dropout_needs_a_null_latent():
    with pytest.raises(ValueError, match="null_latent"):
        train(make_net(), 2, latent_dropout=0.1)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoint_written_periodically_and_at_the_end(tmp_path):
    path = tmp_path / "run.ckpt"
    steps_on_disk = []

    def read_checkpoint(info):
        if path.exists():
            steps_on_disk.append((info["step"], load_train_checkpoint(path).step))

    state = train(make_net(), 7, checkpoint_path=path, checkpoint_every=3, callback=read_checkpoint)
    assert steps_on_disk == [(3, 3), (4, 3), (5, 3), (6, 6), (7, 6)]
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "skcfx-train-state" and raw["step"] == 7
    assert_states_equal(load_train_checkpoint(path), state)
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]  # no temporary files left behind


def test_save_and_load_checkpoint_errors(tmp_path):
    with pytest.raises(TypeError, match="TrainState"):
        save_train_checkpoint({"step": 1}, tmp_path / "x.ckpt")
    torch.save({"step": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an skcfx training checkpoint"):
        load_train_checkpoint(tmp_path / "other.pt")
    save_train_checkpoint(TrainState(step=2, loss_history=[0.5]), tmp_path / "ok.ckpt")
    assert load_train_checkpoint(tmp_path / "ok.ckpt").loss_history == [0.5]


# ---------------------------------------------------------------------------------------------
# Argument validation


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"images": torch.zeros(4, 8, 8)}, ValueError, "images"),
        ({"images": torch.zeros(0, 1, 8, 8)}, ValueError, "images"),
        ({"images": torch.full((2, 1, 8, 8), 2.0)}, ValueError, r"\[-1, 1\]"),
        ({"images": torch.full((2, 1, 8, 8), float("nan"))}, ValueError, "NaN"),
        ({"images": torch.zeros(2, 1, 8, 8, dtype=torch.long)}, TypeError, "floating"),
        ({"images": [[0.0]]}, TypeError, "images"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"max_steps": 2.5}, TypeError, "max_steps"),
        ({"learning_rate": 0}, ValueError, "learning_rate"),
        ({"grad_clip": -1.0}, ValueError, "grad_clip"),
        ({"ema_decay": 1.0}, ValueError, "ema_decay"),
        ({"latent_dropout": 1.0}, ValueError, "latent_dropout"),
        ({"precision": "fast"}, ValueError, "precision"),
        ({"checkpoint_every": 5}, ValueError, "checkpoint_path"),
        ({"state": {"step": 1}}, TypeError, "state"),
        ({"generator": 0}, TypeError, "generator"),
        ({"net": nn.Linear(2, 2)}, TypeError, "encode"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    args = {"net": make_net(), "images": make_images(4), "max_steps": 2, "batch_size": 2,
            "device": "cpu", "generator": torch.Generator().manual_seed(0)}
    args.update(kwargs)
    net, images = args.pop("net"), args.pop("images")
    with pytest.raises(error, match=match):
        train_diffae(net, images, **args)


# ---------------------------------------------------------------------------------------------
# Integration with the real network


def test_real_diffae_net_trains_and_resumes_exactly():
    from skcfx.diffusion.checkpoints import create_net

    def real_net():
        torch.manual_seed(0)
        return create_net("tiny16", model_channels=16, latent_dim=8, null_latent=True)

    images = make_images(n=8, size=16)
    run = dict(batch_size=4, learning_rate=1e-3, latent_dropout=0.25, device="cpu")
    full = train_diffae(real_net(), images, max_steps=4, generator=torch.Generator().manual_seed(0), **run)
    first = train_diffae(real_net(), images, max_steps=2, generator=torch.Generator().manual_seed(0), **run)
    net = real_net()
    resumed = train_diffae(net, images, max_steps=4, state=first, **run)
    assert_states_equal(resumed, full)
    assert all(math.isfinite(v) for v in full.loss_history)
    net.load_state_dict(full.ema_weights)
    net.eval()
    with torch.no_grad():
        x = images[:2]
        eps = net(x, torch.tensor([10, 900]), cond=net.encode(x))
        eps_uncond = net(x, torch.tensor([10, 900]))
    assert eps.shape == x.shape and torch.isfinite(eps).all() and torch.isfinite(eps_uncond).all()


# ---------------------------------------------------------------------------------------------
# Data pipeline: datasets, epoch-wise order, bad batches, precision, chain length


class RecordingDiffAE(TinyDiffAE):
    """Remembers the timesteps it was called with and the images it encoded."""

    def __init__(self, T=1000, **kwargs):
        super().__init__(**kwargs)
        self.config = type("Config", (), {"T": T})()
        self.seen_t, self.seen_x = [], []

    def encode(self, x_0):
        self.seen_x.append(x_0.detach().clone())
        return super().encode(x_0)

    def forward(self, x_t, t, cond=None):
        self.seen_t.append(t.detach().clone())
        return super().forward(x_t, t, cond)


def test_uint8_tensor_and_dataset_train_like_the_float_tensor():
    from skcfx.diffusion.data import TensorImages

    as_uint8 = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    as_float = as_uint8.float() / 255.0 * 2.0 - 1.0
    runs = [train_diffae(make_net(), data, max_steps=6, batch_size=8, learning_rate=1e-2, device="cpu",
                         generator=torch.Generator().manual_seed(0))
            for data in (as_float, as_uint8, TensorImages(as_uint8))]
    for other in runs[1:]:
        assert_states_equal(other, runs[0])


def test_every_epoch_visits_every_image_once_and_batches_stay_full():
    net = make_net(RecordingDiffAE)
    images = make_images(n=10)
    train_diffae(net, images, max_steps=5, batch_size=4, device="cpu", generator=torch.Generator().manual_seed(0))
    seen = torch.cat(net.seen_x)  # 20 images = two epochs of 10
    assert all(x.shape[0] == 4 for x in net.seen_x)

    def index_of(x):
        return int(((images - x).flatten(1).abs().sum(1)).argmin())

    order = [index_of(x) for x in seen]
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:]) == list(range(10))
    assert order[:10] != order[10:]  # a fresh permutation per epoch


def test_a_dataset_smaller_than_a_batch_still_trains():
    state = train_diffae(make_net(), make_images(n=3), max_steps=3, batch_size=8, device="cpu",
                         generator=torch.Generator().manual_seed(0))
    assert state.step == 3 and state.samples_seen == 24


def test_training_uses_the_configured_chain_length():
    net = make_net(RecordingDiffAE, T=50)
    train(net, 20)
    assert int(torch.cat(net.seen_t).max()) < 50 and int(torch.cat(net.seen_t).max()) > 25


def test_random_flip_flips_about_half_and_is_reproducible():
    images = make_images(n=8)
    flipped = []
    for _ in range(2):
        net = make_net(RecordingDiffAE)
        train_diffae(net, images, max_steps=6, batch_size=8, random_flip=True, device="cpu",
                     generator=torch.Generator().manual_seed(0))
        flipped.append(torch.cat(net.seen_x))
    assert torch.equal(flipped[0], flipped[1])
    pool = torch.cat([images, images.flip(3)])
    exact = [bool((pool - x).flatten(1).abs().sum(1).min() == 0) for x in flipped[0]]
    n_flipped = sum(bool((images.flip(3) - x).flatten(1).abs().sum(1).min() == 0)
                    and not bool((images - x).flatten(1).abs().sum(1).min() == 0) for x in flipped[0])
    assert all(exact) and 10 <= n_flipped <= 38


class BrokenAt(torch.utils.data.Dataset):
    """Images in [-1, 1]; the ``bad_batch``-th batch is reported as a BatchError, as a real source does."""

    def __init__(self, images, bad_batch):
        self.images, self.bad_batch, self.calls = images, bad_batch, 0

    def __len__(self):
        return len(self.images)

    def __getitems__(self, indices):
        from skcfx.diffusion.data import BatchError

        self.calls += 1
        if self.calls == self.bad_batch:
            return BatchError(f"X[{indices[0]}]: cannot read '/data/broken.png' as an image.")
        return self.images[torch.as_tensor(indices)]


def test_a_bad_batch_stops_with_its_message_and_a_resumable_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    net = make_net()
    with pytest.raises(ValueError, match=r"step 3: X\[\d+\]: cannot read '/data/broken.png'") as info:
        train_diffae(net, BrokenAt(make_images(), bad_batch=3), max_steps=50, batch_size=8, device="cpu",
                     generator=torch.Generator().manual_seed(0), checkpoint_path=path)
    from skcfx.diffusion.training import TrainingDataError

    assert isinstance(info.value, TrainingDataError) and info.value.state.step == 2
    assert load_train_checkpoint(path).step == info.value.state.step
    assert_tensors_equal(weights(net), info.value.state.net_state)


def test_out_of_range_batches_are_refused():
    class Loud(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.full((1, 8, 8), 3.0)

    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        train_diffae(make_net(), Loud(), max_steps=2, batch_size=2, device="cpu",
                     generator=torch.Generator().manual_seed(0))


def test_dataloader_workers_give_the_same_run():
    from skcfx.diffusion.data import TensorImages

    data = TensorImages(make_images())
    runs = [train_diffae(make_net(), data, max_steps=4, batch_size=8, device="cpu", num_workers=workers,
                         generator=torch.Generator().manual_seed(0)) for workers in (0, 2)]
    assert_states_equal(runs[0], runs[1])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_autocast_trains_on_cpu(precision):
    state = train(make_net(), 6, precision=precision)
    assert state.step == 6 and all(math.isfinite(v) for v in state.loss_history)
    full = train(make_net(), 6)
    assert state.loss_history != full.loss_history  # the low precision really ran
    if precision == "fp16":  # float16 trains with a gradient scaler, whose state resumes too
        assert state.scaler_state and state.scaler_state["scale"] > 0
