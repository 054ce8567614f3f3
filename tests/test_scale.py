"""Real-scale inputs and options of the estimators (tiny models, CPU).

Streaming inputs (a folder, a list of paths, a uint8 memory map, a torch Dataset) give the same
results as the in-memory array; a corrupt file is named; precision options; ``from_pretrained``
keeps its architecture for ``clone``; a fitted encoder's pickle holds the weights, not the
optimizer, unless asked.
"""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone

from skcfx import DiffAEEncoder
from skcfx.diffusion.checkpoints import save_skcfx_checkpoint


@pytest.fixture(scope="module")
def digits_uint8(digits8):
    X, y = digits8
    return np.rint(X[:48] * 255).astype(np.uint8), y[:48]


@pytest.fixture(scope="module")
def digit_folder(digits_uint8, tmp_path_factory):
    """The same images as PNG files in class folders, and their paths in listing order."""
    X, y = digits_uint8
    root = tmp_path_factory.mktemp("digits")
    paths = []
    for i, (image, label) in enumerate(zip(X, y)):
        path = root / f"class{label}" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image[..., 0]).save(path)
        paths.append(path)
    order = sorted(range(len(paths)), key=lambda i: paths[i].relative_to(root).parts)
    return root, [paths[i] for i in order], X[order]


class _TorchvisionLike(torch.utils.data.Dataset):
    """Yields (tensor C x H x W in [0, 1], label), as torchvision's ToTensor datasets do."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return torch.from_numpy(self.X[i]).permute(2, 0, 1).float() / 255.0, int(self.y[i])


def _fit(factory, X, **params):
    return factory(max_steps=6, batch_size=8, **params).fit(X)


def test_streaming_inputs_fit_and_encode_like_the_array(digit_folder, tiny_encoder_factory, tmp_path):
    root, paths, X = digit_folder
    memmap_path = tmp_path / "x.npy"
    np.save(memmap_path, X)
    inputs = {
        "uint8": X,
        "float": X.astype(np.float32) / 255.0,
        "memmap": np.load(memmap_path, mmap_mode="r"),
        "paths": [str(p) for p in paths],
        "folder": root,
        "dataset": _TorchvisionLike(X, np.zeros(len(X))),
    }
    reference = _fit(tiny_encoder_factory, inputs["uint8"])
    Z, noise = reference.transform(X), reference.encode_stochastic(X)
    for name, data in inputs.items():
        encoder = reference if name == "uint8" else _fit(tiny_encoder_factory, data)
        np.testing.assert_array_equal(encoder.loss_history_, reference.loss_history_, err_msg=name)
        np.testing.assert_array_equal(encoder.transform(data), Z, err_msg=name)
        np.testing.assert_array_equal(reference.encode_stochastic(data), noise, err_msg=name)
    np.testing.assert_array_equal(reference.reconstruct(root), reference.reconstruct(X))
    assert reference.score(root) == reference.score(X)


def test_workers_give_the_same_fit(digit_folder, tiny_encoder_factory):
    root, _, X = digit_folder
    a = _fit(tiny_encoder_factory, root, num_workers=0)
    b = _fit(tiny_encoder_factory, root, num_workers=2)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)
    np.testing.assert_array_equal(a.transform(root), b.transform(X))


def test_a_corrupt_file_is_named_and_nothing_changes(digit_folder, tiny_encoder_factory, tmp_path):
    import shutil

    root = tmp_path / "folder"
    shutil.copytree(digit_folder[0], root)
    bad = sorted(root.rglob("*.png"))[-1]
    bad.write_bytes(b"not a png at all")
    fresh = tiny_encoder_factory(max_steps=40, batch_size=8)
    with pytest.raises(ValueError, match=bad.name):
        fresh.fit(root)
    assert not hasattr(fresh, "model_")
    fitted = _fit(tiny_encoder_factory, digit_folder[2])
    before = pickle.dumps(fitted)
    with pytest.raises(ValueError, match=bad.name):
        fitted.transform(root)
    fitted.set_params(warm_start=True, max_steps=60)
    with pytest.raises(ValueError, match=bad.name):
        fitted.fit(root)
    fitted.set_params(warm_start=False, max_steps=6)
    assert pickle.dumps(fitted) == before


def test_wrong_size_in_a_folder_is_named(digit_folder, tiny_encoder_factory, tmp_path):
    import shutil

    root = tmp_path / "folder"
    shutil.copytree(digit_folder[0], root)
    odd = sorted(root.rglob("*.png"))[-1]
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(odd)
    encoder = _fit(tiny_encoder_factory, digit_folder[2])
    with pytest.raises(ValueError, match=rf"{odd.name}.*10x10, expected 8x8"):
        encoder.transform(root)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_precision_options_train_and_infer(precision, digits_uint8, tiny_encoder_factory):
    X, _ = digits_uint8
    encoder = _fit(tiny_encoder_factory, X, precision=precision)
    Z = encoder.transform(X[:4])
    assert Z.shape == (4, 8) and np.isfinite(Z).all()
    assert np.isfinite(encoder.reconstruct(X[:4])).all()
    if precision != "bf16":  # 'auto' is float32 on the CPU
        reference = _fit(tiny_encoder_factory, X, precision="fp32")
        np.testing.assert_array_equal(reference.transform(X[:4]), Z)


def test_bad_precision_is_refused(digits_uint8, tiny_encoder_factory):
    with pytest.raises(ValueError, match="precision"):
        tiny_encoder_factory(precision="int8").fit(digits_uint8[0])


def test_from_pretrained_keeps_the_architecture_for_clone(fitted_tiny_encoder, tmp_path):
    path = fitted_tiny_encoder.save(tmp_path / "enc.pt")
    loaded = DiffAEEncoder.from_pretrained(path, device="cpu")
    cloned = clone(loaded)
    assert cloned.get_params() == loaded.get_params()
    assert cloned._build_config(loaded.image_shape_) == loaded.config_
    # A file from another tool (no stored parameters): the network itself is the architecture.
    odd = tmp_path / "odd.pt"
    save_skcfx_checkpoint(odd, fitted_tiny_encoder.net_)
    loaded = DiffAEEncoder.from_pretrained(odd, device="cpu")
    assert clone(loaded)._build_config(loaded.image_shape_) == fitted_tiny_encoder.config_


def test_pickle_holds_the_weights_not_the_optimizer(digits_uint8, tiny_encoder_factory):
    X, _ = digits_uint8
    encoder = _fit(tiny_encoder_factory, X)
    weights = sum(t.numel() * t.element_size() for t in encoder.net_.state_dict().values())
    lean = len(pickle.dumps(encoder))
    assert lean < 1.5 * weights + 200_000
    restored = pickle.loads(pickle.dumps(encoder))
    np.testing.assert_array_equal(restored.transform(X[:4]), encoder.transform(X[:4]))
    full = _fit(tiny_encoder_factory, X, keep_train_state=True)
    assert len(pickle.dumps(full)) > 4 * weights
    # With the training state, warm start after unpickling continues exactly.
    again = pickle.loads(pickle.dumps(full)).set_params(warm_start=True, max_steps=10).fit(X)
    straight = tiny_encoder_factory(max_steps=10, batch_size=8).fit(X)
    np.testing.assert_array_equal(again.loss_history_, straight.loss_history_)


def test_explainer_fits_and_explains_from_a_folder_like_from_arrays(digit_folder, fitted_tiny_encoder):
    from sklearn.linear_model import LogisticRegression

    from skcfx import CounterfactualExplainer, ModalDirectionFinder
    from skcfx.methods import DifCluE

    root, paths, X = digit_folder
    labels = np.array([int(p.parent.name.removeprefix("class")) for p in paths])
    y = np.isin(labels, [1, 7]).astype(int)
    clf = LogisticRegression(max_iter=500).fit(X.reshape(len(X), -1) / 255.0, y)

    def explainer():
        return CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=clf, method=DifCluE(max_decodes=2),
                                       direction_finder=ModalDirectionFinder(n_modes=2, random_state=0),
                                       batch_size=5, random_state=0)

    from_array = explainer().fit(X, y).explain(X[:7])
    for data, queries in ((root, [str(p) for p in paths[:7]]), (_TorchvisionLike(X, y), X[:7])):
        streamed = explainer().fit(data, y).explain(queries)
        np.testing.assert_array_equal(streamed.counterfactuals, from_array.counterfactuals)
        np.testing.assert_array_equal(streamed.images, from_array.images)
        np.testing.assert_array_equal(streamed.success, from_array.success)
    with pytest.raises(ValueError, match="one label per image"):
        explainer().fit(root, y[:-1])


def test_compile_reaches_torch_compile_in_training_and_inference(digits_uint8, tiny_encoder_factory, monkeypatch):
    X, _ = digits_uint8
    compiled = []
    real = torch.compile

    def spy(fn, **kwargs):
        # The wiring is tested, and dynamo really traces the semantic encoder (eager backend, a
        # few seconds); tracing the UNet takes 20-35 s on this CPU, so the others run uncompiled.
        name = fn.__name__ if callable(getattr(fn, "__func__", None)) else type(fn).__name__
        compiled.append(name)
        return real(fn, backend="eager") if name == "encode" else fn

    monkeypatch.setattr(torch, "compile", spy)
    encoder = tiny_encoder_factory(max_steps=2, batch_size=8, compile=True).fit(X)
    Z = encoder.transform(X[:4])
    assert "DiffusionObjective" in compiled and "DiffAENet" in compiled and "encode" in compiled
    reference = tiny_encoder_factory(max_steps=2, batch_size=8).fit(X)
    np.testing.assert_allclose(Z, reference.transform(X[:4]), atol=1e-5)
    assert pickle.loads(pickle.dumps(encoder)).transform(X[:4]).shape == (4, 8)  # compiled form not pickled


def test_a_published_checkpoint_clones_to_its_architecture():
    import os
    from pathlib import Path

    root = Path(os.environ.get("SKCFX_REFERENCE_DIR", Path(__file__).resolve().parent / "data"))
    path = root / "diffae_tiny16" / "last.ckpt"  # shipped in tests/data
    if not path.is_file():
        pytest.skip(f"reference fixture not found at {path} (set SKCFX_REFERENCE_DIR)")
    loaded = DiffAEEncoder.from_pretrained(path, device="cpu")
    assert loaded.get_params()["latent_dropout"] == 0.0 and not loaded.config_.null_latent
    rebuilt = clone(loaded)._build_config(loaded.image_shape_)
    assert rebuilt == loaded.config_
