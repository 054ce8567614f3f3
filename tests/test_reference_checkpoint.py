"""skcfx reproduces the published Diffusion Autoencoders implementation numerically.

Each fixture is a checkpoint in the published Lightning format (``last.ckpt``) with
random (non-zero) weights plus ``reference_io.pt``, what the published code computes
with its EMA weights. Matching every tensor proves that the network, its weight
layout, the schedule, respacing, DDIM inversion and DDIM decoding are the real thing.

``tests/data/diffae_tiny16`` (16x16 RGB, 3 MB) ships with the project, so these tests
run everywhere; ``diffae_tiny32`` (32x32 RGB, 11 MB) is checked too when the
project's reference folder is there (``../shared/reference`` beside the clone, or
``SKCFX_REFERENCE_DIR``).

Tolerance: ``atol = rtol = 1e-4``. Single network calls agree to about 1e-6; the
10-step decode amplifies float32 round-off to about 1e-4 (the float64 result of
the same computation is itself 1.4e-4 away from the float32 reference), so the
mean absolute error is checked too, and it is far tighter.
"""

import os
from pathlib import Path

import pytest
import torch

from skcfx.diffusion.checkpoints import (
    create_net,
    get_config,
    load_checkpoint,
    load_published_checkpoint,
)
from skcfx.diffusion.sampling import CountingDenoiser, invert_ddim, sample_ddim
from skcfx.diffusion.schedule import Schedule

REFERENCE_DIR = Path(os.environ.get(
    "SKCFX_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"))
SHIPPED = Path(__file__).resolve().parent / "data" / "diffae_tiny16"
FIXTURES = {"tiny16": SHIPPED, "tiny32": REFERENCE_DIR / "diffae_tiny32"}
# The architecture of each fixture (from the reference README), as DiffAEConfig fields.
ARCHITECTURES = {
    "tiny16": dict(image_size=16, in_channels=3, model_channels=32, channel_mult=(1, 1),
                   enc_channel_mult=(1, 1, 1), attention_resolutions=(8,), num_res_blocks=1,
                   enc_num_res_blocks=1, embed_channels=32, latent_dim=32),
    "tiny32": dict(image_size=32, in_channels=3, model_channels=32, channel_mult=(1, 2),
                   enc_channel_mult=(1, 2, 2), attention_resolutions=(16,), num_res_blocks=2,
                   enc_num_res_blocks=2, embed_channels=64, latent_dim=64),
}
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def fixture_dir(request):
    folder = FIXTURES[request.param]
    if not (folder / "last.ckpt").is_file() or not (folder / "reference_io.pt").is_file():
        if folder == SHIPPED:
            pytest.fail(f"the shipped reference fixture is missing from {folder}")
        pytest.skip(f"reference fixture not found in {folder} (set SKCFX_REFERENCE_DIR)")
    return request.param, folder


@pytest.fixture(scope="module")
def reference(fixture_dir):
    _, folder = fixture_dir
    net, info = load_published_checkpoint(folder / "last.ckpt")
    return net, info, torch.load(folder / "reference_io.pt", weights_only=True)


# A DDIM chain feeds each network output into the next call, so float rounding that differs between
# CPUs / torch builds (1e-6 per call) grows along the chain: the element-wise bound of a chain is
# looser (5e-4 element-wise, 5e-5 on average; single network calls keep 1e-4).
CHAIN_TOL = dict(atol=5e-4, rtol=1e-4)


def _assert_matches(actual, expected, mean_tol, tol=TOL):
    torch.testing.assert_close(actual, expected, **tol)
    assert (actual - expected).abs().mean().item() < mean_tol


# ---------------------------------------------------------------------------
# The fixture

def test_shipped_fixture_is_the_reference_one():
    # tests/data holds a copy of the project's reference fixture: same bytes when both are here.
    original = REFERENCE_DIR / "diffae_tiny16"
    if not original.is_dir():
        pytest.skip(f"no reference folder at {original} to compare the shipped copy with")
    for name in ("last.ckpt", "reference_io.pt"):
        assert (SHIPPED / name).read_bytes() == (original / name).read_bytes(), name


def test_loader_reads_the_published_format(reference, fixture_dir):
    net, info, _ = reference
    name, _ = fixture_dir
    assert info["format"] == "published" and info["weights"] == "ema"
    assert not net.training and net.config.null_latent is False
    config = net.config.to_dict()
    assert {key: config[key] for key in ARCHITECTURES[name]} == {
        key: list(v) if isinstance(v, tuple) else v for key, v in ARCHITECTURES[name].items()}
    if name == "tiny32":  # the fixture has exactly the architecture registered as 'tiny32'
        assert net.config == get_config("tiny32")
    assert info["hyper_parameters"]["beta_scheduler"] == "linear" and info["ignored_keys"] == []


def test_ema_weights_are_the_ones_loaded(reference, fixture_dir):
    net, _, _ = reference
    state = torch.load(fixture_dir[1] / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in net.state_dict().items():
        assert torch.equal(value, state["ema_model." + key]), key


def test_semantic_encoder_and_denoiser(reference):
    net, _, io = reference
    with torch.no_grad():
        _assert_matches(net.encode(io["x"]), io["z"], 1e-5)
        _assert_matches(net(io["x"], io["t"], cond=io["z"]), io["eps"], 1e-5)


def test_respaced_timesteps(reference):
    _, _, io = reference
    assert Schedule.linear(1000, 10).timesteps.tolist() == list(io["timesteps_ddim10"])
    assert Schedule.linear(1000, 5).timesteps.tolist() == list(io["timesteps_ddim5"])


def test_ddim_inversion_and_decoding(reference):
    net, _, io = reference
    model = CountingDenoiser(net)
    cond = {"cond": io["z"]}
    ddim10, ddim5 = Schedule.linear(1000, 10), Schedule.linear(1000, 5)
    x_T = invert_ddim(model, io["x"], ddim10, extra_args=cond)
    _assert_matches(x_T, io["xT_ddim10"], 5e-5, CHAIN_TOL)
    recon = sample_ddim(model, io["xT_ddim10"], ddim10, extra_args=cond)
    _assert_matches(recon, io["recon_ddim10"], 5e-5, CHAIN_TOL)
    render = sample_ddim(model, io["xT_ddim10"], ddim5, extra_args=cond)
    _assert_matches(render, io["render_ddim5_from_xT_ddim10"], 5e-5, CHAIN_TOL)
    assert model.n_calls == 10 + 10 + 5


def test_load_checkpoint_detects_the_published_format(reference, fixture_dir):
    net, info = load_checkpoint(fixture_dir[1] / "last.ckpt")
    assert info["format"] == "published" and net.config == reference[0].config


# ---------------------------------------------------------------------------
# Synthetic published-format files (no fixture needed)

MICRO = dict(img_size=8, net_ch=32, net_ch_mult=[1, 1], net_enc_channel_mult=[1, 1, 1], net_attn=[4],
             net_enc_attn=None, net_num_res_blocks=1, net_enc_num_res_blocks=1,
             net_beatgans_embed_channels=16, style_ch=8, net_beatgans_attn_head=1, dropout=0.1, T=1000,
             beta_scheduler="linear", model_name="beatgans_autoenc")


def _fake_published(tmp_path, hparams=None, extra_keys=None, drop=None):
    """Write a published-format checkpoint whose model.* and ema_model.* weights differ."""
    hparams = {**MICRO, **(hparams or {})}
    net = create_net(dict(image_size=8, model_channels=32, channel_mult=[1, 1], enc_channel_mult=[1, 1, 1],
                          attention_resolutions=[4], num_res_blocks=1, enc_num_res_blocks=1,
                          embed_channels=16, latent_dim=8))
    state = {}
    for key, value in net.state_dict().items():
        state["model." + key] = torch.zeros_like(value)
        state["ema_model." + key] = torch.full_like(value, 0.5)
    state.update(extra_keys or {})
    state["x_T"] = torch.randn(2, 3, 8, 8)
    if drop:
        del state[drop]
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams, "global_step": 7, "epoch": 1}, path)
    return path


def test_synthetic_published_checkpoint_loads_ema_or_model(tmp_path):
    path = _fake_published(tmp_path, extra_keys={"ema_model.latent_net.layers.0.weight": torch.zeros(2, 2)})
    net, info = load_published_checkpoint(path)
    assert all(bool((p == 0.5).all()) for p in net.parameters())
    assert info["global_step"] == 7 and info["ignored_keys"] == ["ema_model.latent_net.layers.0.weight"]
    raw, info = load_published_checkpoint(path, use_ema=False)
    assert info["weights"] == "model" and all(bool((p == 0).all()) for p in raw.parameters())


@pytest.mark.parametrize("hparams, match", [
    ({"beta_scheduler": "cosine"}, "beta_scheduler"),
    ({"net_resblock_updown": False}, "net_resblock_updown"),
    ({"net_enc_pool": "depthconv"}, "net_enc_pool"),
    ({"model_name": "beatgans_ddpm"}, "model_name"),
    ({"net_num_input_res_blocks": 3}, "net_num_input_res_blocks"),
])
def test_unsupported_published_settings_raise(tmp_path, hparams, match):
    with pytest.raises(ValueError, match=match):
        load_published_checkpoint(_fake_published(tmp_path, hparams))


def test_mismatched_published_weights_raise(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        load_published_checkpoint(_fake_published(tmp_path, drop="ema_model.out.2.weight"))
    with pytest.raises(ValueError, match="shape|size"):
        load_published_checkpoint(_fake_published(tmp_path, {"style_ch": 4}))
    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="hyper_parameters"):
        load_published_checkpoint(tmp_path / "bad.ckpt")


def test_untrusted_pickles_are_refused_with_an_explanation(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"img_size": 8}, "obj": Path("x")}, path)
    with pytest.raises(ValueError, match="weights_only=False"):
        load_published_checkpoint(path)
