"""Run every benchmark in order, then regenerate the README results section (`make bench`).

The DiffAE trained by diffae_digits.py is cached in benchmarks/output/ and reused by the digit
benchmarks. On 2 CPU cores the whole run takes about an hour (shapes_protocol.py --cpu: ~15 min).

    python benchmarks/run_all.py [--skip shapes_protocol ...]
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["diffae_digits.py"],
    ["difclue_digits.py"],
    ["compare_methods.py"],
    ["latent_dropout_cost.py"],
    ["memory_explain.py"],
    ["shapes_protocol.py", "--cpu"],
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
