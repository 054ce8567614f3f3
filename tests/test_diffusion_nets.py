"""The DiffAE network, its configuration registry and the skcfx checkpoint format."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from skcfx.diffusion.checkpoints import (
    create_net,
    default_config_for,
    get_config,
    list_configs,
    load_checkpoint,
    load_skcfx_checkpoint,
    register_config,
    save_skcfx_checkpoint,
)
from skcfx.diffusion.nets import DiffAEConfig, DiffAENet, GroupNorm32, timestep_embedding

REFERENCE_DIR = Path(os.environ.get(
    "SKCFX_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"))
FFHQ128_KEYS = REFERENCE_DIR / "diffae_ffhq128_state_dict_keys.txt"
if not FFHQ128_KEYS.is_file():  # tests/data ships a copy of the published key list
    FFHQ128_KEYS = Path(__file__).resolve().parent / "data" / "diffae_ffhq128_state_dict_keys.txt"

MICRO = DiffAEConfig(image_size=8, in_channels=2, model_channels=8, channel_mult=(1, 2),
                     enc_channel_mult=(1, 2, 2), attention_resolutions=(4,), embed_channels=16,
                     latent_dim=6, num_heads=2)


def _randomise(net, seed=0):
    """Re-draw every parameter (the zero-initialised ones too) so every layer matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(0.2 * torch.randn(param.shape, generator=gen))
    return net.eval()


def _published_keys():
    if not FFHQ128_KEYS.is_file():
        pytest.skip(f"reference key list not found at {FFHQ128_KEYS} (set SKCFX_REFERENCE_DIR)")
    keys = {}
    for line in FFHQ128_KEYS.read_text().splitlines():
        if line.strip():
            name, shape = line.split(" ", 1)
            keys[name] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return keys


# ---------------------------------------------------------------------------
# Published layout

def test_ffhq128_matches_every_published_key_and_shape():
    published = _published_keys()
    with torch.device("meta"):
        net = create_net("ffhq128")
    ours = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    assert sorted(set(published) - set(ours)) == []
    assert sorted(set(ours) - set(published)) == []
    assert {k: v for k, v in ours.items() if published[k] != v} == {}


@pytest.mark.parametrize("name", ["ffhq64", "ffhq256"])
def test_published_sizes_build_and_run_on_meta(name):
    with torch.device("meta"):
        net = create_net(name)
        cfg = net.config
        x = torch.empty(2, 3, cfg.image_size, cfg.image_size)
        eps = net(x, torch.zeros(2, dtype=torch.long), cond=net.encode(x))
    assert eps.shape == x.shape
    # one level deeper encoder, same latent width as the published models
    assert len(cfg.encoder_channel_mult) == len(cfg.channel_mult) + 1 and cfg.latent_dim == 512


def test_zero_initialised_residual_branches():
    net = DiffAENet(MICRO).eval()
    x = torch.randn(3, 2, 8, 8)
    z = net.encode(x)
    # Output conv zero-initialised: a fresh net predicts eps = 0; the encoder is not zero.
    assert torch.count_nonzero(net(x, torch.tensor([1, 2, 3]), cond=z)) == 0
    assert z.abs().sum() > 0
    assert torch.count_nonzero(net.middle_block[1].proj_out.weight) == 0
    assert torch.count_nonzero(net.input_blocks[1][0].out_layers[3].weight) == 0


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 7]), 6)
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(3) / 3)
    assert torch.allclose(emb[1], torch.cat([torch.cos(7 * freqs), torch.sin(7 * freqs)]))
    assert timestep_embedding(torch.tensor([3]), 5).shape == (1, 5)


# ---------------------------------------------------------------------------
# Behaviour

def test_forward_depends_on_time_and_latent():
    net = _randomise(DiffAENet(MICRO))
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    z = torch.randn(2, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = net(x, torch.tensor([10, 10]), cond=z)
        assert torch.allclose(net(x, 10, cond=z), base)  # scalar t broadcasts
        assert not torch.allclose(net(x, torch.tensor([500, 500]), cond=z), base, atol=1e-4)
        assert not torch.allclose(net(x, torch.tensor([10, 10]), cond=z.flip(0)), base, atol=1e-4)
        # samples are independent: evaluating one alone gives the same answer
        assert torch.allclose(net(x[:1], torch.tensor([10]), cond=z[:1]), base[:1], atol=1e-5)


def test_dropout_only_in_train_mode():
    net = _randomise(DiffAENet(MICRO))
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([5, 6])
    z = net.encode(x).detach()
    with torch.no_grad():
        assert torch.equal(net(x, t, cond=z), net(x, t, cond=z))
        net.train()
        assert not torch.allclose(net(x, t, cond=z), net(x, t, cond=z))


def test_cond_none_needs_a_null_latent():
    net = DiffAENet(MICRO)
    x = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match="null_latent"):
        net(x, 0)
    assert not hasattr(net, "null_latent")
    with_null = _randomise(DiffAENet(DiffAEConfig.from_dict({**MICRO.to_dict(), "null_latent": True})))
    assert with_null.null_latent.shape == (6,) and with_null.null_latent.requires_grad
    with torch.no_grad():
        explicit = with_null(x, 3, cond=with_null.null_cond(2))
        assert torch.equal(with_null(x, 3), explicit)


def test_forward_checks_shapes():
    net = DiffAENet(MICRO)
    x = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match="x_t"):
        net(torch.zeros(2, 3, 8, 8), 0, cond=torch.zeros(2, 6))
    with pytest.raises(ValueError, match="cond"):
        net(x, 0, cond=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="t must"):
        net(x, torch.zeros(3, dtype=torch.long), cond=torch.zeros(2, 6))
    with pytest.raises(ValueError, match="x_0"):
        net.encode(torch.zeros(2, 2, 16, 16))


def test_groupnorm_runs_in_float32_for_half_inputs():
    norm = GroupNorm32(2, 4)
    x = (torch.randn(2, 4, 3, 3) * 300).to(torch.bfloat16)
    out = norm.to(torch.bfloat16)(x)
    assert out.dtype == torch.bfloat16
    expected = torch.nn.functional.group_norm(x.float(), 2)
    assert torch.allclose(out.float(), expected, atol=2e-2)


def test_bfloat16_network_matches_float32():
    net = _randomise(DiffAENet(MICRO))
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    with torch.no_grad():
        z = net.encode(x)
        ref = net(x, torch.tensor([3, 900]), cond=z)
        half = net.to(torch.bfloat16)(x.bfloat16(), torch.tensor([3, 900]), cond=z.bfloat16())
    assert half.dtype == torch.bfloat16
    assert (half.float() - ref).abs().max() < 0.05 * ref.abs().max()


# ---------------------------------------------------------------------------
# Configuration

def test_config_round_trips_through_json():
    data = json.loads(json.dumps(MICRO.to_dict()))
    assert DiffAEConfig.from_dict(data) == MICRO
    with pytest.raises(ValueError, match="unknown DiffAEConfig fields"):
        DiffAEConfig.from_dict({**data, "widht": 3})


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=10, channel_mult=(1, 2, 2)), "divisible"),
    (dict(image_size=16, model_channels=0), "model_channels"),
    (dict(image_size=16, channel_mult=()), "channel_mult"),
    (dict(image_size=16, dropout=1.5), "dropout"),
    (dict(image_size=16, model_channels=16, channel_mult=(1, 2)), "GroupNorm"),
    (dict(image_size=16, channel_mult=(1, "2")), "channel_mult"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffAEConfig(**kwargs)


def test_encoder_fields_default_to_decoder_fields():
    cfg = get_config("tiny32", attention_resolutions=(8,))
    assert cfg.enc_attention_resolutions is None and cfg.encoder_attention_resolutions == (8,)
    assert MICRO.encoder_channel_mult == (1, 2, 2)
    assert DiffAEConfig(image_size=16, channel_mult=(1, 2)).encoder_channel_mult == (1, 2)


# ---------------------------------------------------------------------------
# Registry

def test_registry_names_and_errors():
    assert {"ffhq64", "ffhq128", "ffhq256", "tiny16", "tiny32"} <= set(list_configs())
    with pytest.raises(ValueError, match="tiny16"):
        get_config("tiny8")
    with pytest.raises(ValueError, match="unknown DiffAEConfig fields"):
        create_net("tiny16", latentdim=8)
    with pytest.raises(ValueError, match="already registered"):
        register_config("tiny16", get_config("tiny16"))
    with pytest.raises(TypeError):
        create_net(3)


def test_tiny16_is_small_and_overrides_apply():
    net = create_net("tiny16")
    n_params = sum(p.numel() for p in net.parameters())
    assert 100_000 <= n_params <= 300_000  # trains 2500 steps in ~9 min on one CPU thread
    assert create_net("tiny16", latent_dim=8, null_latent=None).config.latent_dim == 8
    assert create_net(MICRO.to_dict(), in_channels=1).config.in_channels == 1


@pytest.mark.parametrize("size", [8, 16, 28, 32, 64])
def test_default_config_for_builds_a_working_net(size):
    cfg = default_config_for(size, 1)
    assert (cfg.image_size, cfg.in_channels) == (size, 1)
    with torch.device("meta"):
        net = DiffAENet(cfg)
        x = torch.empty(1, 1, size, size)
        assert net(x, 0, cond=net.encode(x)).shape == x.shape
    with pytest.raises(ValueError, match="image_size"):
        default_config_for(0)


# ---------------------------------------------------------------------------
# skcfx checkpoints

def test_skcfx_checkpoint_round_trip(tmp_path):
    net = _randomise(DiffAENet(MICRO))
    extra = {"step": 12, "stats": {"mean": torch.arange(3.0)}, "names": ["a", "b"]}
    path = save_skcfx_checkpoint(tmp_path / "sub" / "net.pt", net, extra)
    assert sorted(os.listdir(path.parent)) == ["net.pt"]  # no temp file left behind
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "skcfx" and payload["config"] == MICRO.to_dict()
    loaded, info = load_skcfx_checkpoint(path)
    assert info["extra"]["step"] == 12 and torch.equal(info["extra"]["stats"]["mean"], torch.arange(3.0))
    assert not loaded.training and loaded.config == MICRO
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert load_checkpoint(path)[1]["format"] == "skcfx"


def test_skcfx_checkpoint_rejects_bad_input(tmp_path):
    net = DiffAENet(MICRO)
    with pytest.raises(TypeError, match=r"extra\['arr'\]"):
        save_skcfx_checkpoint(tmp_path / "a.pt", net, {"arr": object()})
    with pytest.raises(TypeError, match="net"):
        save_skcfx_checkpoint(tmp_path / "a.pt", torch.nn.Linear(2, 2))
    assert not (tmp_path / "a.pt").exists()
    torch.save({"format": "other"}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="not an skcfx checkpoint"):
        load_skcfx_checkpoint(tmp_path / "b.pt")
    with pytest.raises(FileNotFoundError):
        load_skcfx_checkpoint(tmp_path / "missing.pt")


def test_skcfx_checkpoint_overwrite_is_atomic(tmp_path):
    path = tmp_path / "net.pt"
    save_skcfx_checkpoint(path, DiffAENet(MICRO), {"v": 1})
    with pytest.raises(TypeError):
        save_skcfx_checkpoint(path, DiffAENet(MICRO), {"v": {1.5: "float key"}})
    assert load_skcfx_checkpoint(path)[1]["extra"] == {"v": 1}  # old file untouched


def test_net_pickles_and_deepcopies():
    import copy
    import pickle

    net = _randomise(DiffAENet(MICRO))
    x, z = torch.randn(1, 2, 8, 8), torch.randn(1, 6)
    with torch.no_grad():
        expected = net(x, 4, cond=z)
        for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
            assert clone.config == MICRO
            assert torch.equal(clone(x, 4, cond=z), expected)


def test_attention_is_the_published_formula_with_several_heads():
    from einops import rearrange

    from skcfx.diffusion.nets import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(64, num_heads=4).double()
    torch.nn.init.normal_(block.proj_out.weight)  # zero-initialised in the published net
    x = torch.randn(2, 64, 8, 8, dtype=torch.float64)
    qkv = block.qkv(block.norm(rearrange(x, "n c h w -> n c (h w)")))
    q, k, v = rearrange(qkv, "n (heads three c) l -> three (n heads) c l", heads=4, three=3)
    scale = q.shape[1] ** -0.25  # the published q * scale, k * scale
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    out = rearrange(torch.einsum("bts,bcs->bct", weight, v), "(n heads) c l -> n (heads c) l", heads=4)
    expected = rearrange(rearrange(x, "n c h w -> n c (h w)") + block.proj_out(out), "n c (h w) -> n c h w", h=8)
    torch.testing.assert_close(block(x), expected, atol=1e-12, rtol=1e-10)
