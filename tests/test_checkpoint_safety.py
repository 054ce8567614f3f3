"""Real Lightning 1.x checkpoints load without running code from the file; anything else is refused.

A Lightning 1.4 ``last.ckpt`` (what the published DiffAE code writes) holds, next to the weights,
optimizer and scheduler states, callback states keyed by the callback's *class*, and possibly an
``AttributeDict`` of hyper-parameters. The checkpoints here are pickled with stand-in classes
registered under the real Lightning module names, which are removed again before loading, so
loading cannot import them.
"""

import pickle
import sys
import types

import numpy as np
import pytest
import torch

from skcfx.diffusion.checkpoints import LightningStandIn, create_net, load_checkpoint, load_published_checkpoint

MICRO_HPARAMS = dict(img_size=8, net_ch=32, net_ch_mult=[1, 1], net_enc_channel_mult=[1, 1, 1], net_attn=[4],
                     net_enc_attn=None, net_num_res_blocks=1, net_enc_num_res_blocks=1,
                     net_beatgans_embed_channels=16, style_ch=8, net_beatgans_attn_head=1, dropout=0.1,
                     T=1000, beta_scheduler="linear", model_name="beatgans_autoenc")


@pytest.fixture
def fake_lightning(monkeypatch):
    """Modules named like Lightning 1.4's, present only while a checkpoint is written."""
    modules = {}

    def add(name, **attrs):
        module = types.ModuleType(name)
        for key, value in attrs.items():
            value.__module__ = name
            setattr(module, key, value)
        modules[name] = module
        monkeypatch.setitem(sys.modules, name, module)

    add("pytorch_lightning")
    add("pytorch_lightning.callbacks")
    add("pytorch_lightning.callbacks.model_checkpoint", ModelCheckpoint=type("ModelCheckpoint", (), {}))
    add("pytorch_lightning.callbacks.lr_monitor", LearningRateMonitor=type("LearningRateMonitor", (), {}))
    add("pytorch_lightning.utilities")
    add("pytorch_lightning.utilities.parsing", AttributeDict=type("AttributeDict", (dict,), {}))
    yield modules
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)


def _net():
    return create_net(dict(image_size=8, model_channels=32, channel_mult=[1, 1], enc_channel_mult=[1, 1, 1],
                           attention_resolutions=[4], num_res_blocks=1, enc_num_res_blocks=1,
                           embed_channels=16, latent_dim=8))


def _lightning_checkpoint(path, modules):
    """What Lightning 1.4's ``dump_checkpoint`` writes for the published LitModel."""
    net = _net()
    ema = _net()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ema.parameters():
            p.normal_(0, 0.1)
    state = {"model." + k: v for k, v in net.state_dict().items()}
    state.update({"ema_model." + k: v for k, v in ema.state_dict().items()})
    state["x_T"] = torch.randn(2, 3, 8, 8)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net(torch.zeros(1, 3, 8, 8), torch.tensor([3]), cond=torch.zeros(1, 8)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: 1.0)
    checkpoint_cls = modules["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint
    monitor_cls = modules["pytorch_lightning.callbacks.lr_monitor"].LearningRateMonitor
    hparams = modules["pytorch_lightning.utilities.parsing"].AttributeDict(MICRO_HPARAMS)
    torch.save({
        "epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.4.5",
        "state_dict": state,
        "callbacks": {
            checkpoint_cls: {"monitor": None, "best_model_score": None, "best_model_path": "",
                             "current_score": torch.tensor(0.25), "dirpath": "checkpoints/ffhq128",
                             "kth_value": np.float64(np.inf)},
            monitor_cls: {"lrs": {"lr-AdamW": [1e-4]}},
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
        "hparams_name": "conf",
        "hyper_parameters": hparams,
    }, path)
    return ema


def test_lightning_checkpoint_with_callbacks_and_optimizer_states_loads(tmp_path, fake_lightning):
    path = tmp_path / "last.ckpt"
    ema = _lightning_checkpoint(path, fake_lightning)
    for name in list(fake_lightning):  # the classes are gone: loading must not need them
        del sys.modules[name]
    with pytest.raises(pickle.UnpicklingError):  # torch alone refuses it
        torch.load(path, weights_only=True)
    net, info = load_published_checkpoint(path)
    assert info["global_step"] == 1234 and info["epoch"] == 3
    assert info["hyper_parameters"]["style_ch"] == 8
    for key, value in ema.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    assert load_checkpoint(path)[1]["format"] == "published"
    assert "pytorch_lightning" not in sys.modules


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def test_malicious_pickle_is_refused_naming_what(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"img_size": 8}, "payload": _Exploit()}, path)
    with pytest.raises(ValueError, match=r"refused to unpickle '(posix|os|nt)\.system'"):
        load_published_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_a_lightning_class_cannot_be_instantiated(tmp_path, fake_lightning):
    cls = fake_lightning["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint

    def reduce(self):
        return (cls, ())

    cls.__reduce__ = reduce  # pickled as a call of the class
    path = tmp_path / "call.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"img_size": 8}, "callback": cls()}, path)
    for name in list(fake_lightning):
        del sys.modules[name]
    with pytest.raises(ValueError, match="ModelCheckpoint"):
        load_published_checkpoint(path)


def test_stand_ins_refuse_to_be_built():
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        type("X", (LightningStandIn,), {"source": "pytorch_lightning.X"})()
