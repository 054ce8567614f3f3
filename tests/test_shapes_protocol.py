"""Smoke tests of benchmarks/shapes_protocol.py at a toy size, and of the attribute oracle it uses.

The whole protocol (data, three trained models, three methods, both metric tables, README lines)
runs once per module on 16 px scenes with networks of a few thousand parameters; the tests check
the structure of the JSON payload, exact denoiser counts and that every figure is finite and in
range. The numbers themselves mean nothing at this size.
"""

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skcfx.datasets import make_shapes
from skcfx.diffusion import guidance_bounds, respace_timesteps
from skcfx.methods import DifCluE
from skcfx.protocols import attribute_proba, fit_attribute_oracle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shapes_protocol as sp  # noqa: E402

TOY_TAU = {"dime": 3, "fastdime": 4}

TOY = dict(
    sp.QUICK, n_train=160, n_test=60, n_queries=3, n_fit_guided=64,
    encoder=dict(architecture=dict(model_channels=8, channel_mult=(1, 2), enc_channel_mult=(1, 2),
                                   attention_resolutions=(8,), embed_channels=16, latent_dim=8),
                 max_steps=10, batch_size=16, latent_dropout=0.1, encode_steps=3, decode_steps=3),
    classifier=dict(model_name="test_resnet", max_epochs=1, batch_size=16),
    oracle=dict(model_name="test_resnet", max_epochs=1, batch_size=16),
    substitute=dict(model_name="test_resnet", max_epochs=1, batch_size=8),
    difclue=dict(max_decodes=2),
    # One lambda_c: one attempt, so the denoiser count per counterfactual is exact.
    dime=dict(respacing=100, tau=TOY_TAU["dime"], lambda_c=(8.0,)),
    fastdime=dict(respacing=100, tau=TOY_TAU["fastdime"], lambda_c=(8.0,)),
    dissect=dict(n_steps=3, batch_size=4, train_decode_steps=1, decode_steps=3, max_train_images=16),
)


# The module runs the whole toy protocol once (~25 s): `make test-fast` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
    return sp.run(copy.deepcopy(TOY), device="cpu", log=lambda message: None)


def _in_range(value, low, high):
    """None stands for an undefined metric (e.g. no successful counterfactual)."""
    return value is None or (math.isfinite(value) and low <= value <= high)


def test_payload_is_strict_json(result):
    # write_json would accept NaN, but strict parsers reject it: undefined metrics must be null.
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["settings"]["n_queries"] == TOY["n_queries"]


def test_payload_structure(result):
    assert set(result["methods"]) == {"difclue", "difclue_no_extension", "difclue_decode_20", "difclue_unguided_search",
                                      "dime", "fastdime", "dissect"}
    for row in result["methods"].values():
        assert {"flip_rate", "fid", "mnac", "cd", "sigma_L", "l1", "n_function_evals", "independent_validity",
                "spread_ratio_flipped", "closer_to_query_flipped"} <= set(row["dime_table"])
        assert {"percent_conversion", "attribute_added_per_slot", "both_concepts_shown", "distinctness",
                "substitutability", "importance"} <= set(row["difclue_table"])
    assert {"DiffAE", "classifier", "oracle", "independent classifier", "dime explain",
            "fastdime metrics"} <= set(result["stage_times_s"])
    # The independent classifier is another architecture than the explained one.
    assert result["models"]["independent"]["params"]["model_name"] != result["models"]["classifier"]["params"]["model_name"]
    assert result["settings"]["device"] == "cpu"
    assert result["protocol"]["subclass_names"] == {"1": "color_is_red", "2": "has_border"}


def test_guided_methods_count_their_denoiser_calls(result):
    # One attempt of DiME costs tau (tau + 1) / 2 calls, one of FastDiME tau calls.
    tau = TOY_TAU["dime"]
    assert result["methods"]["dime"]["dime_table"]["n_function_evals"] == tau * (tau + 1) / 2
    assert result["methods"]["fastdime"]["dime_table"]["n_function_evals"] == TOY_TAU["fastdime"]
    assert result["methods"]["difclue"]["dime_table"]["n_function_evals"] > 0


def test_metrics_are_in_range(result):
    assert _in_range(result["protocol"]["mode_recovery"]["ari"], -1, 1)
    assert result["protocol"]["fid_real_baseline"] >= 0
    for row in result["methods"].values():
        d, c = row["dime_table"], row["difclue_table"]
        for key in ("flip_rate", "flip_rate_negatives", "flip_rate_positives"):
            assert _in_range(d[key], 0, 1), key
        assert d["flip_rate"] is not None
        assert _in_range(d["sigma_L"], 0, 1) and d["sigma_L"] is not None
        assert _in_range(d["l1"], 0, 1) and d["l1"] is not None
        for key in ("fid", "mnac", "cd"):
            assert _in_range(d[key], 0, np.inf), key
        assert _in_range(d["mnac"], 0, 8)
        # Undefined (None) only when nothing flipped.
        assert _in_range(d["independent_validity"], 0, 1)
        assert (d["independent_validity"] is None) == (d["flip_rate"] == 0)
        assert _in_range(d["spread_ratio_flipped"], 0, np.inf) and _in_range(d["closer_to_query_flipped"], 0, 1)
        assert _in_range(c["both_concepts_shown"], 0, 1)
        for slot in c["attribute_added_per_slot"]:
            assert sum(slot.values()) == pytest.approx(1.0)
        assert _in_range(c["distinctness"]["accuracy"], 0, 1)
        assert _in_range(c["substitutability"]["score"], 0, 1)
        assert _in_range(c["importance"]["R"], -1, 1)
        assert _in_range(c["importance"]["MSE"], 0, 1)


def test_percent_conversion_for_the_methods_with_modes_only(result):
    pc = result["methods"]["difclue"]["difclue_table"]["percent_conversion"]
    assert len(pc["per_mode"]) == 2
    assert {m["attribute"] for m in pc["per_mode"]} <= {"color_is_red", "has_border"}
    assert all(_in_range(m["rate"], 0, 1) for m in pc["per_mode"])
    assert pc["mean"] == pytest.approx(np.mean([m["rate"] for m in pc["per_mode"]]))
    assert result["methods"]["dime"]["difclue_table"]["percent_conversion"] is None


def test_extra_difclue_rows_share_the_modes_and_their_settings_apply(result):
    rows = result["methods"]
    for name in ("difclue_no_extension", "difclue_decode_20", "difclue_unguided_search"):
        assert rows[name]["difclue_table"]["mode_to_subclass"] == rows["difclue"]["difclue_table"]["mode_to_subclass"]
    # without the extension a counterfactual gets the ladder's and at most the fallback's decodes,
    # once unguided and at most once more guided (the retry)
    method = DifCluE()
    info = rows["difclue_no_extension"]["info"]
    assert info["mean_decodes"] <= 2 * (method.max_decodes + method.fallback_decodes)
    assert info["mean_guided_decodes"] <= info["mean_decodes"] + 1e-9
    # every decode of difclue_decode_20 takes the encoder's steps, the other rows DifCluE's own
    # (inversion shared by the 2 modes of a query, then the decodes; a guided one costs two calls
    # per step of its guidance interval, (0.1, 0.6) of T)
    enc = TOY["encoder"]
    low, high = guidance_bounds(method.guidance_interval, 1000)
    for name, steps in (("difclue", method.decode_steps), ("difclue_decode_20", enc["decode_steps"])):
        guided_steps = sum(low <= int(t) <= high for t in respace_timesteps(1000, steps))
        info = rows[name]["info"]
        calls = info["mean_decodes"] * steps + info["mean_guided_decodes"] * guided_steps
        assert rows[name]["dime_table"]["n_function_evals"] == pytest.approx(enc["encode_steps"] / 2 + calls)
    # the unguided search of the release before: only the fallback's decodes are guided
    info = rows["difclue_unguided_search"]["info"]
    assert info["mean_guided_decodes"] <= method.fallback_decodes + 1e-9


def test_dissect_concepts_are_named_one_to_one_and_scored(result):
    table = result["methods"]["dissect"]["difclue_table"]
    assert sorted(table["mode_to_subclass"].values()) == [1, 2]
    pc = table["percent_conversion"]
    assert {m["attribute"] for m in pc["per_mode"]} == {"color_is_red", "has_border"}
    assert all(_in_range(m["rate"], 0, 1) for m in pc["per_mode"])
    # Its traversals were trained here: the fit took denoiser work DiME's (a check of the models) did not.
    assert result["methods"]["dissect"]["info"]["explainer_fit_s"] > 0


def test_readme_lines(result):
    lines = result["readme_lines"]
    assert all(isinstance(line, str) for line in lines)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert [row.split("|")[1].strip() for row in rows] == ["difclue", "difclue_no_extension", "difclue_decode_20",
                                                           "difclue_unguided_search", "dime", "fastdime", "dissect"]
    n_columns = lines[2].count("|")
    assert all(row.count("|") == n_columns for row in rows)


def test_make_task_drops_scenes_with_both_attributes():
    task = sp.make_task(dict(TOY, n_train=100, n_test=40))
    assert task["X_train"].shape == (100, 16, 16, 3) and task["X_test"].shape[0] == 40
    for split in ("train", "test"):
        sub, y = task[f"sub_{split}"], task[f"y_{split}"]
        assert set(np.unique(sub)) <= {0, 1, 2}
        np.testing.assert_array_equal(y, (sub > 0).astype(y.dtype))
        np.testing.assert_array_equal(task[f"attr_{split}"]["color_is_red"], sub == 1)


def test_split_test_keeps_queries_apart():
    task = {"y_test": np.array([0, 1] * 20)}
    split = sp.split_test(task, n_queries=4, n_cf=6)
    q = split["queries"]
    assert np.all(task["y_test"][q[:4]] == 0) and np.all(task["y_test"][q[4:]] == 1)
    assert not set(q) & set(split["heldout"])
    assert not set(split["baseline"]) & set(split["reference"])
    with pytest.raises(ValueError, match="n_queries"):
        sp.split_test(task, n_queries=30, n_cf=6)


def test_build_config_overrides():
    args = argparse.Namespace(quick=False, cpu=False, image_size=None, n_train=100, n_test=None, n_queries=None,
                              encoder_steps=7, dime_respacing=200, dime_tau=60)
    cfg = sp.build_config(args)
    assert cfg["n_train"] == 100 and cfg["encoder"]["max_steps"] == 7
    assert cfg["dime"] == cfg["fastdime"] == {"respacing": 200, "tau": 60}
    assert sp.FULL["encoder"]["max_steps"] != 7  # the preset itself is left untouched
    assert cfg["cache"] is True  # CLI runs reuse a cached DiffAE unless --no-cache


# ---------------------------------------------------------------------------------------------------
# attribute oracle (skcfx.protocols)
# ---------------------------------------------------------------------------------------------------


def test_oracle_reads_an_easy_attribute_and_keeps_the_rng():
    X, attributes = make_shapes(240, image_size=16, random_state=0)
    state = torch.random.get_rng_state()
    train = {name: values[:200] for name, values in attributes.items()}
    oracle = fit_attribute_oracle(X[:200], train, model_name="test_resnet", max_epochs=3,
                                  batch_size=16, device="cpu", random_state=0)
    assert torch.equal(state, torch.random.get_rng_state())
    proba = attribute_proba(oracle, X[200:])
    assert proba.shape == (40, 8) and proba.min() >= 0 and proba.max() <= 1
    # A dark against a light background is the easiest attribute: a working oracle reads it.
    column = list(attributes).index("dark_background")
    accuracy = np.mean((proba[:, column] > 0.5) == attributes["dark_background"][200:])
    assert accuracy > 0.9


@pytest.mark.parametrize(
    "attributes, match",
    [({"a": np.full(10, 2)}, "binary"), ({"a": np.zeros(9)}, "rows"), (np.zeros(10), "dict or an"),
     ({"a": np.zeros(10), "b": np.zeros(8)}, "common length")],
)
def test_oracle_rejects_bad_attributes(attributes, match):
    X = np.zeros((10, 16, 16, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        fit_attribute_oracle(X, attributes, model_name="test_resnet", device="cpu")


def test_oracle_rejects_bad_arguments():
    X = np.zeros((10, 16, 16, 3), dtype=np.float32)
    attributes = {"a": np.arange(10) % 2}
    with pytest.raises(ValueError, match="timm architecture"):
        fit_attribute_oracle(X, attributes, model_name="no_such_net", device="cpu")
    with pytest.raises(ValueError, match="max_epochs"):
        fit_attribute_oracle(X, attributes, model_name="test_resnet", max_epochs=0, device="cpu")
    with pytest.raises(TypeError, match="oracle"):
        attribute_proba(lambda x: x, X)
