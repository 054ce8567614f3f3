"""Run every benchmark in order, then regenerate the README results section (`make bench`).

The digits recipe (10000 steps) is the shipped DiffAE; the shorter ones diffae_digits.py compares
(2500, 5000 steps) are trained and cached in benchmarks/output/, as is the shapes DiffAE (8000
steps, about 30 min). On 2 CPU cores a run from scratch takes a few hours. Fashion-MNIST
(fashion_protocol.py: --prepare, then the protocol; needs the Debian package
dataset-fashion-mnist, about 100 min of DiffAE training) is not part of it.

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
    ["difclue_digits.py", "--pairs", "all", "--variants", "kmeans,gmm", "--output", "difclue_digits_all_pairs_10000"],
    ["difclue_digits.py", "--pairs", "1,7", "0,6", "--n-queries", "100", "--classifier", "resnet18:15",
     "--variants", "kmeans,gmm", "--output", "difclue_digits_two_pairs_10000"],
    # the default (guided retry of the failures) against no retry (gmm) and guidance on every decode
    ["difclue_digits.py", "--pairs", "all", "--variants", "gmm,guidance_2,guidance_2_half,difclue,retry_fallback",
     "--output", "difclue_digits_all_pairs_guidance"],
    ["difclue_digits.py", "--pairs", "1,7", "0,6", "--n-queries", "100", "--classifier", "resnet18:15",
     "--variants", "gmm,difclue", "--output", "difclue_digits_two_pairs_guidance"],
    # the straight-to-guided-fallback escalation (today's defaults: direct_local_3), added to the same JSONs
    ["difclue_digits.py", "--pairs", "all", "--variants", "direct_retry_3,direct_retry_4,direct_local_3,local_3_no_retry",
     "--output", "difclue_digits_all_pairs_guidance", "--add-to"],
    ["difclue_digits.py", "--pairs", "1,7", "0,6", "--n-queries", "100", "--classifier", "resnet18:15",
     "--variants", "direct_local_3", "--output", "difclue_digits_two_pairs_guidance", "--add-to"],
    # guidance on every decode in the interval (0.1, 0.6) of t / T (today's defaults: difclue) against
    # the unguided ladder and fully guided fallback before it (direct_local_3) and other intervals
    ["difclue_digits.py", "--pairs", "all", "--variants",
     "difclue,direct_local_3,interval_0.2_0.6,interval_noisiest_half", "--output", "difclue_digits_all_pairs_interval"],
    ["difclue_digits.py", "--pairs", "1,7", "0,6", "--n-queries", "100", "--classifier", "resnet18:15",
     "--variants", "difclue,direct_local_3", "--output", "difclue_digits_two_pairs_interval"],
    ["modes_digits_pairs.py"],
    ["modes_digits_pairs.py", "--encoder-steps", "5000", "--output", "modes_digits_pairs_5000"],
    ["compare_methods.py"],
    ["latent_dropout_cost.py"],
    ["memory_explain.py"],
    ["shapes_protocol.py", "--cpu"],
    ["shapes_difclue_variants.py"],  # after the protocol: reuses its cached DiffAE
    ["shapes_difclue_variants.py", "--encoder-steps", "8000", "--variants", "default,no_retry,guidance_2,guidance_2_half,retry_fallback",
     "--output", "shapes_difclue_variants_guidance"],
    ["shapes_difclue_variants.py", "--variants", "previous_default,direct_local_3,local_3_no_retry,previous_no_retry,"
     "direct_retry_3", "--output", "shapes_difclue_variants_direct"],
    ["shapes_difclue_variants.py", "--variants", "default,unguided_search,interval_0.2_0.6,interval_noisiest_half,"
     "guidance_2", "--output", "shapes_difclue_variants_interval"],
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
