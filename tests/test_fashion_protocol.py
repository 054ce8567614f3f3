"""Smoke test of benchmarks/fashion_protocol.py on tiny fake IDX files (the real files may be absent).

The whole protocol (data, DiffAE, oracle, classifiers, DifCluE and FastDiME, figure, README
lines) runs once at a toy size; the test checks the structure of the payload and that figures are
in range. The numbers mean nothing at this size.
"""

import copy
import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fashion_protocol as fp  # noqa: E402


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fake_fashion(folder, n, prefix, seed):
    """Class c is a bright bar at row 2c (easy for any network), on noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    X = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        X[i, 2 * c + 3: 2 * c + 6, 4:24] = 230
    _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", X)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)


@pytest.mark.slow
def test_protocol_runs_end_to_end(tmp_path, monkeypatch):
    _fake_fashion(tmp_path, 200, "train", 0)
    _fake_fashion(tmp_path, 200, "t10k", 1)
    monkeypatch.setattr(fp, "CACHE", tmp_path / "cache")
    cfg = copy.deepcopy(fp.QUICK)
    cfg.update(path=tmp_path, n_train=200, n_test=200, n_queries=3, n_guided_queries=2, n_fit_explainer=100,
               n_fid_baseline=10, n_semantic_pairs=20, pairs=[list(p) for p in fp.PAIRS])
    cfg["encoder"].update(max_steps=6, batch_size=16, encode_steps=3, decode_steps=3)
    cfg["classifier"].update(max_epochs=1, batch_size=16)
    cfg["oracle"].update(max_epochs=1, batch_size=16)
    cfg["fastdime"].update(tau=3)
    cfg["dissect"] = dict(n_steps=2, batch_size=4, train_decode_steps=1, decode_steps=2, max_train_images=16)
    figure = tmp_path / "figure.png"
    result = fp.run(cfg, ["difclue", "fastdime", "dissect"], log=lambda m: None, figure_path=figure)
    assert figure.is_file()
    assert result["encoder"]["n_steps"] == 6 and result["encoder"]["reconstruction_mse_pm1"] >= 0
    assert 0 <= result["encoder"]["semantic_control"]["shows_latent_class"] <= 1
    assert [r["pair"] for r in result["runs"]] == [list(p) for p in fp.PAIRS]
    for run in result["runs"]:
        assert set(run["methods"]) == {"difclue", "fastdime", "dissect"}
        assert -1 <= run["mode_recovery"]["ari"] <= 1
        difclue, fastdime = run["methods"]["difclue"], run["methods"]["fastdime"]
        assert difclue["n_queries"] == 3 and fastdime["n_queries"] == 2
        assert 0 <= difclue["percent_conversion"]["mean"] <= 1 and 0 <= difclue["flip_rate"] <= 1
        assert run["independent_params"]["model_name"] != cfg["classifier"]["model_name"]
        for row in run["methods"].values():  # undefined (NaN) exactly when nothing flipped
            validity, spread = row["independent_validity"], row["spread_ratio_flipped"]
            if row["flip_rate"] == 0:
                assert np.isnan(validity) and np.isnan(spread)
            else:
                assert 0 <= validity <= 1 and spread >= 0
        assert "percent_conversion" not in fastdime and fastdime["n_function_evals"] > 0
        assert np.isfinite(run["fid_real_baseline"])
        # DISSECT's two concepts are named after the pair's two classes, one each.
        dissect = run["methods"]["dissect"]
        assert sorted(dissect["concept_to_class"].values()) == sorted(run["pair_labels"])
        assert 0 <= dissect["percent_conversion"]["mean"] <= 1 and dissect["n_queries"] == 3
        refs = run["real_references"]  # the yardstick: real images of the modes
        assert set(refs) == {"random_member", "nearest_member"}
        assert refs["nearest_member"]["l1"] <= refs["random_member"]["l1"] and refs["random_member"]["spread_ratio"] > 0
    lines = fp.readme_lines(result)
    assert len(lines) == 2 + 2 * (3 + 2) and all(line.startswith("|") for line in lines)
    # the cache is reused: a second run trains nothing
    again = fp.run(cfg, ["difclue"], log=lambda m: None)
    assert again["encoder"]["from_cache"] and again["oracle"]["cached"]
    # --encoder-file: the protocol on a saved DiffAE (here the cached one copied away), same figures
    saved = tmp_path / "saved_encoder.pt"
    saved.write_bytes(fp.encoder_path(cfg).read_bytes())
    on_file = fp.run({**cfg, "encoder_file": str(saved)}, ["difclue"], log=lambda m: None)
    assert on_file["encoder"]["path"] == str(saved) and on_file["encoder"]["n_steps"] == 6
    for a, b in zip(on_file["runs"], again["runs"]):
        assert a["methods"]["difclue"]["flip_rate"] == b["methods"]["difclue"]["flip_rate"]


def test_prepare_goes_on_from_what_earlier_calls_reached(tmp_path, monkeypatch):
    # --prepare: a checkpoint resumes exactly; without one the saved file is warm-started.
    _fake_fashion(tmp_path, 64, "train", 0)
    _fake_fashion(tmp_path, 10, "t10k", 1)
    monkeypatch.setattr(fp, "CACHE", tmp_path / "cache")
    cfg = copy.deepcopy(fp.QUICK)
    cfg.update(path=tmp_path, n_train=64, n_test=10)
    X = fp.load_data(cfg)["X_train"]
    steps = []
    for max_steps, drop_checkpoint in ((3, False), (5, False), (7, True)):
        cfg["encoder"].update(max_steps=max_steps, batch_size=8, encode_steps=2, decode_steps=2)
        path = fp.encoder_path(cfg)
        if drop_checkpoint:
            Path(str(path) + ".ckpt").unlink(missing_ok=True)
        encoder, info = fp.load_encoder(cfg, X, log=lambda m: None, train_more=True)
        steps.append((encoder.n_steps_, info["n_steps"], len(encoder.loss_history_)))
        if max_steps == 3:  # a copy of the training checkpoint, as --length-curve measures them
            copy_path = tmp_path / "step3.ckpt"
            copy_path.write_bytes(Path(str(path) + ".ckpt").read_bytes())
    assert steps == [(3, 3, 3), (5, 5, 5), (7, 7, 7)]
    cfg["oracle"].update(max_epochs=1, batch_size=16)
    cfg["n_semantic_pairs"] = 8
    rows = fp.length_curve(cfg, [copy_path], log=lambda m: None)
    assert rows[0]["n_steps"] == 3 and 0 <= rows[0]["semantic_control"]["shows_latent_class"] <= 1
    # A protocol run reuses the file as it is.
    cfg["encoder"]["max_steps"] = 9
    encoder, info = fp.load_encoder(cfg, X, log=lambda m: None)
    assert info["from_cache"] and encoder.n_steps_ == 7
    # --mode-recovery scores both clusterings of every pair on that cached DiffAE
    cfg["pairs"] = [list(p) for p in fp.PAIRS]
    recovery = fp.mode_recovery(cfg, log=lambda m: None)
    assert recovery["n_steps"] == 7 and len(recovery["ari"]) == 4
    assert all(-1 <= v <= 1 for v in recovery["ari"].values())


def test_real_references_retrieve_the_nearest_member_of_each_mode():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 4, 4), dtype=np.uint8)
    X_train, train_mode = np.concatenate([images, images]), np.repeat([0, 1], 20)  # the same images in both modes
    queries = images[[3, 7, 12, 18]]  # members of both modes: the nearest member is the query itself
    refs = fp.real_references(queries, X_train, train_mode, [0, 1], seed=0)
    assert refs["nearest_member"] == {"spread_ratio": 1.0, "l1": 0.0}
    assert refs["random_member"]["l1"] > 0.1
