"""The skcfx command line, in-process (main(argv)) and as `python -m skcfx` subprocesses."""

import configparser
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from skcfx import CounterfactualExplanation, DiffAEEncoder
from skcfx.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _write(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits8, fitted_tiny_encoder):
    """A labelled folder (one_or_seven / other), query PNGs, an encoder and three classifier files."""
    X, digits = digits8
    root = tmp_path_factory.mktemp("cli")
    _write(root / "train" / "one_or_seven", X[np.isin(digits, [1, 7])][:40])
    _write(root / "train" / "other", X[np.isin(digits, [0, 3])][:40])
    _write(root / "queries", X[np.isin(digits, [0, 3])][60:63])
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "big.png")
    (root / "junk.pt").write_bytes(b"this is not a checkpoint")
    fitted_tiny_encoder.save(root / "encoder.pt")
    y = np.isin(digits, [0, 3]).astype(int)  # class index = sorted folder order
    joblib.dump(LogisticRegression(max_iter=300).fit(X.reshape(len(X), -1), y), root / "clf.joblib")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 deprecates TorchScript
        torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))),
                       root / "ts.pt")
    torch.save(timm.create_model("test_resnet", num_classes=2, in_chans=1).state_dict(), root / "resnet.pth")
    return root


def _explain(files, out, *extra, classifier="clf.joblib"):
    return main(["explain", str(files / "queries"), "--encoder", str(files / "encoder.pt"), "--classifier",
                 str(files / classifier) if (files / classifier).exists() else classifier, "--train",
                 str(files / "train"), "-o", str(out), "-q", *extra])


def test_help_everywhere(capsys):
    for argv in ([], ["train"], ["explain"], ["report"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv + ["--help"])
        assert exit_info.value.code == 0
        assert "usage: skcfx" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["explain"])  # required arguments missing: a usage error
    assert exit_info.value.code == 2


def test_train_writes_a_loadable_encoder(files, tmp_path, capsys):
    assert main(["train", str(files / "train"), "-o", str(tmp_path / "enc.pt"), "--max-steps", "2",
                 "--batch-size", "8", "-q"]) == 0
    encoder = DiffAEEncoder.load(tmp_path / "enc.pt")
    assert encoder.n_steps_ == 2 and encoder.image_shape_ == (8, 8, 1) and encoder.verbose is False
    assert "[1/2] 80 images of 8x8x1" in capsys.readouterr().err


def test_explain_with_a_joblib_model_writes_explanation_and_report(files, tmp_path, capsys):
    assert _explain(files, tmp_path / "out", "--save-explainer") == 0
    e = CounterfactualExplanation.load(tmp_path / "out" / "explanation.npz")
    assert e.counterfactuals.shape[:2] == (3, 2)
    report = (tmp_path / "out" / "report.html").read_text()
    assert "one_or_seven" in report and "Importance curves" in report and report.count('id="q') == 3
    out = capsys.readouterr()
    assert "wrote" in out.out and "[5/5]" in out.err
    # the report command re-renders it, with the saved explainer too
    assert main(["report", str(tmp_path / "out" / "explanation.npz"), "-o", str(tmp_path / "again.html"),
                 "--explainer", str(tmp_path / "out" / "explainer.joblib"), "--train", str(files / "train")]) == 0
    assert "Map of the latents" in (tmp_path / "again.html").read_text()


@pytest.mark.parametrize("classifier, extra", [("ts.pt", ()), ("test_resnet", ("--weights", "resnet.pth")),
                                               ("ts.pt", ("--input-range", "0", "1"))])
def test_explain_torch_classifiers_from_files(files, tmp_path, classifier, extra):
    extra = tuple(str(files / a) if a.endswith(".pth") else a for a in extra)
    assert _explain(files, tmp_path / "out", *extra, classifier=classifier) == 0
    assert CounterfactualExplanation.load(tmp_path / "out" / "explanation.npz").n_queries == 3


@pytest.mark.parametrize("change, message", [
    ({"queries": "big.png"}, "must be 8x8.*--resize"),
    ({"queries": "missing.png"}, "no such file"),
    ({"encoder": "junk.pt"}, "not a PyTorch file"),
    ({"encoder": "nothing.pt"}, "no such file"),
    ({"classifier": "junk.pt"}, "not a PyTorch file"),
    ({"classifier": "resnet.pth"}, "not a TorchScript file.*--weights"),
    ({"classifier": "test_resnet"}, "needs its trained weights"),
    ({"classifier": "no_such_architecture"}, "neither a file nor a timm"),
    ({"train": "queries"}, "no class subfolders"),
])
def test_bad_input_fails_with_one_clear_line(files, tmp_path, capsys, change, message):
    args = {"queries": "queries", "encoder": "encoder.pt", "classifier": "clf.joblib", "train": "train", **change}
    def path(name):  # a file of the fixture, or a name as it stands (timm architectures)
        return str(files / name) if (files / name).exists() or "." in name else name

    code = main(["explain", path(args["queries"]), "--encoder", path(args["encoder"]), "--classifier",
                 path(args["classifier"]), "--train", path(args["train"]), "-o", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("skcfx explain: error:")
    assert re.search(message, err[-1]), err[-1]


def test_resize_accepts_other_sizes(files, tmp_path):
    code = main(["explain", str(files / "big.png"), "--encoder", str(files / "encoder.pt"), "--classifier",
                 str(files / "clf.joblib"), "--train", str(files / "train"), "-o", str(tmp_path / "o"), "-q",
                 "--resize"])
    assert code == 0


def test_python_dash_m_and_the_console_script(files, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "skcfx", *argv], capture_output=True, text=True, env=env,
                              timeout=300)

    ok = run("--version")
    assert ok.returncode == 0 and ok.stdout.startswith("skcfx ")
    bad = run("report", str(files / "junk.pt"), "-o", str(tmp_path / "r.html"))
    assert bad.returncode == 1 and "skcfx report: error:" in bad.stderr and "Traceback" not in bad.stderr
    usage = run("explain")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    # `skcfx` is installed as a console script running the same main()
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["options.entry_points"]["console_scripts"].split() == ["skcfx", "=", "skcfx.cli:main"]
