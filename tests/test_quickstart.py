"""The README's Quick start, run twice in two processes, gives bit-identical results on CPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_code():
    """The first Python block of the README's Quick start section, as a user would copy it."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _meta(npz):
    meta = json.loads(str(npz["__meta__"]))
    meta.pop("wall_time_s")
    return meta


@pytest.mark.slow
def test_quickstart_is_bit_identical_across_processes(tmp_path):
    code = quickstart_code()
    assert 'from_pretrained("digits16")' in code and "random_state=0" in code
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    runs = [tmp_path / "run0", tmp_path / "run1"]
    procs = []
    for run in runs:  # side by side: two processes, each on one thread
        run.mkdir()
        (run / "quickstart.py").write_text(code, encoding="utf-8")
        procs.append(subprocess.Popen([sys.executable, "quickstart.py"], cwd=run, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [proc.communicate(timeout=1200) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    a, b = (np.load(run / "cf.npz", allow_pickle=False) for run in runs)
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        if name != "__meta__":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert _meta(a) == _meta(b)
    assert outputs[0][0] == outputs[1][0] and "mostly digit" in outputs[0][0]  # the printed mode summary
    # and it explains something: most counterfactuals flip the classifier
    assert a["success"].mean() >= 0.5
    assert (runs[0] / "report.html").is_file()
