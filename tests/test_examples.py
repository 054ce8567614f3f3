"""The examples run end to end (tiny --quick settings)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["pipeline_joblib", "timm_module", "image_folder"])
def test_example_runs(name, tmp_path, capsys):
    argv = ["--quick"] + (["--output", str(tmp_path)] if name == "image_folder" else [])
    explanation = _load(name).main(argv)
    assert explanation.counterfactuals.shape[:2] == (4, explanation.n_counterfactuals)
    assert explanation.success.shape == (4, explanation.n_counterfactuals)
    if name == "image_folder":  # it says where it wrote, and wrote there
        out = capsys.readouterr().out
        for written in ("images", "counterfactuals.png", "report.html"):
            assert (tmp_path / written).exists() and str((tmp_path / written).resolve()) in out
