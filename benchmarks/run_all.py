"""Run every benchmark in order, then regenerate the README results section (`make bench`).

The DiffAEs trained by diffae_digits.py (5000 steps, the recipe; 2500 steps, for the semantic
control comparison) are cached in benchmarks/output/ and reused by the digit benchmarks; the
shapes DiffAE is cached too. On 2 CPU cores a run from scratch takes well over an hour (DiffAE
training alone: about 18 + 9 min for digits and 15 min for shapes on an otherwise idle core).

    python benchmarks/run_all.py [--skip shapes_protocol ...]
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["diffae_digits.py"],
    ["difclue_digits.py"],  # many pairs, cheaper classifier: difclue_digits_pairs.json
    ["difclue_digits.py", "--pairs", "1,7", "0,6", "--n-queries", "100", "--classifier", "resnet18:15",
     "--variants", "benchmark", "--output", "difclue_digits"],  # the two benchmark pairs, full recipe
    ["modes_digits_pairs.py"],
    ["compare_methods.py"],
    ["latent_dropout_cost.py"],
    ["memory_explain.py"],
    ["shapes_protocol.py", "--cpu"],
    ["shapes_difclue_variants.py"],  # after the protocol: reuses its cached DiffAE
    ["memory_fit.py", "--steps", "2"],  # about 25 min: 2 x 4 fits of the 64 px DiffAE
    ["train_speed.py", "--steps", "10"],  # about 40 min on 2 busy cores (64 px training dominates)
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip", nargs="*", default=[], help="script names (without .py) to skip")
    args = parser.parse_args()
    for script, *extra in SCRIPTS:
        if Path(script).stem in args.skip:
            continue
        print(f"== {script} {' '.join(extra)}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *extra], check=True, cwd=HERE)
    subprocess.run([sys.executable, str(HERE / "make_readme_table.py")], check=True, cwd=HERE)


if __name__ == "__main__":
    main()
