"""The examples run end to end (tiny --quick settings)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # each example trains small models end to end (~20 s)
@pytest.mark.parametrize("name", ["pipeline_joblib", "timm_module", "image_folder"])
def test_example_runs(name, tmp_path, capsys):
    argv = ["--quick"] + (["--output", str(tmp_path)] if name == "image_folder" else [])
    e = _load(name).main(argv)
    k = e.n_counterfactuals
    assert e.counterfactuals.shape[:2] == (4, k) and k >= 1
    assert e.success.shape == (4, k)
    # the values, not only the shapes: real images, real edits, consistent bookkeeping
    assert np.isfinite(e.counterfactuals).all()
    assert e.counterfactuals.min() >= 0 and e.counterfactuals.max() <= 1
    changed = np.abs(e.counterfactuals - e.images[:, None]).reshape(4, k, -1).max(axis=2)
    assert (changed > 1e-3).all()  # every counterfactual differs from its query
    np.testing.assert_array_equal(e.success, e.cf_proba.argmax(axis=2) == e.cf_target_class)
    np.testing.assert_allclose(e.cf_proba.sum(axis=2), 1.0, atol=1e-5)
    np.testing.assert_array_equal(e.target_class, 1 - e.original_proba.argmax(axis=1))  # binary tasks
    assert e.n_function_evals > 0
    if name == "image_folder":  # it says where it wrote, and wrote there
        out = capsys.readouterr().out
        for written in ("images", "counterfactuals.png", "report.html"):
            assert (tmp_path / written).exists() and str((tmp_path / written).resolve()) in out


@pytest.mark.slow  # trains a 16 px DiffAE for 20 steps (~20 s)
def test_train_ddp_example_runs_in_one_process():
    encoder = _load("train_ddp").main(["--quick"])
    assert encoder.n_steps_ == 20 and encoder.loss_history_[-5:].mean() < encoder.loss_history_[:5].mean()
