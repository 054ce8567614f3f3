"""Regenerate the README's results section from benchmarks/results/*.json.

    python benchmarks/make_readme_table.py          # rewrites README.md between the markers
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name):
    path = HERE / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(result):
    m = result["machine"]
    device = m["cuda"] or f"CPU ({m['cpu_count']} cores, {m['torch_threads']} torch threads)"
    return f"{device}, torch {m['versions']['torch']}, {result['date']}"


def _f(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def diffae_section(r):
    s = r["settings"]
    lines = [f"**DiffAE on digits, 16 px** (`benchmarks/diffae_digits.py`; {_machine(r)}): "
             f"{s['n_parameters'] / 1e6:.2f}M parameters, {s['max_steps']} steps of batch {s['batch_size']}, "
             f"trained in {r['training_wall_time_s'] / 60:.1f} min on {s['n_train']} images; "
             f"held-out reconstruction MSE in [-1, 1] units on {s['n_eval']} images:", "",
             "| DDIM steps (invert / decode) | MSE, inverted x_T | MSE, random x_T | encode img/s | decode img/s |",
             "|---|---|---|---|---|"]
    for row in r["reconstruction"]:
        lines.append(f"| {row['encode_steps']} / {row['decode_steps']} | {_f(row['mse_inverted_noise'], 4)} | "
                     f"{_f(row['mse_random_noise'], 4)} | {row['encode_images_per_s']:.0f} | "
                     f"{row['decode_images_per_s']:.0f} |")
    control = r.get("semantic_control") or []
    if control:
        n = control[0]["n_pairs"]
        lines += ["", f"Semantic control: {n} held-out pairs (a, b) of different digits; "
                  "decode(z of b, inverted noise of a), read by an SVC on pixels:", "",
                  "| training steps | training time | shows b's digit (latent) | shows a's digit (noise) |",
                  "|---|---|---|---|"]
        for row in control:
            lines.append(f"| {row['max_steps']} | {row['training_wall_time_s'] / 60:.1f} min | "
                         f"{_f(row.get('shows_latent_class', row.get('shows_latent_digit')), 2)} | "
                         f"{_f(row.get('shows_noise_class', row.get('shows_noise_digit')), 2)} |")
    return lines


def difclue_section(r):
    s = r["settings"]
    lines = [f"**DifCluE mixed-class protocol on digits** (`benchmarks/difclue_digits.py`; {_machine(r)}): "
             f"pairs {s['pairs']} each form the positive class, {s['n_queries']} held-out negatives per pair "
             f"explained towards each mode; oracle = SVC on pixels (accuracy {_f(r['oracle_accuracy'])}). "
             "Percent conversion = share of mode-k counterfactuals the oracle reads as digit k.", "",
             "| variant | pair | percent conversion (per digit) | mean | flip rate | mode ARI | NFE / CF | mean alpha |",
             "|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        for name, m in run["variants"].items():
            per = ", ".join(f"{k}: {_f(v, 2)}" for k, v in m["percent_conversion"]["per_mode"].items())
            mean = m["percent_conversion"]["mean"]
            if "shows_digit" in m:  # one direction: how often its single counterfactual shows each digit
                per = ", ".join(f"{k}: {_f(v, 2)}" for k, v in m["shows_digit"].items()) + " (one CF shows)"
                mean = sum(m["shows_digit"].values()) / len(m["shows_digit"])
            lines.append(f"| {name} | {run['pair']} | {per} | {_f(mean, 2)} | "
                         f"{_f(m['flip_rate'], 2)} | {_f(m['mode_recovery']['ari'], 2)} | "
                         f"{m['n_function_evals']:.1f} | {_f(m['mean_alpha'], 2)} |")
    return lines


# The runs of difclue_digits.py over several pairs: JSON name -> (command line, what its rows are).
PAIRS_RUNS = {
    "difclue_digits_pairs": (
        "--pairs random 10 --variants ...",
        "Row `difclue` is the default of its day (`search='bracket'`, no fallback); `scan` is that search "
        "alone; `dissect` is the DifCluE paper's comparator (2 concepts, named after the digit they show)."),
    "difclue_digits_fallback": (
        "--pairs random 10 --variants difclue,fallback_nearest,fallback_centre --output difclue_digits_fallback",
        "Same pairs, classifiers and queries as above, rerun in one go: `difclue` is `search='scan'` "
        "without a fallback (the default before this run), `fallback_centre` the default since."),
    "difclue_digits_all_pairs": (
        "--pairs all --variants difclue,fallback_centre,fallback_centre_4 --output difclue_digits_all_pairs",
        "All 45 pairs: `difclue` is `search='scan'` without a fallback, `fallback_centre` the default from "
        "then on (without the later `extend_decodes`), "
        "`fallback_centre_4` the same with 4 fallback decodes."),
    "difclue_digits_two_pairs_fallback": (
        "--pairs 1,7 0,6 --n-queries 100 --classifier resnet18:15 --variants difclue,fallback_centre,"
        "fallback_centre_4 --output difclue_digits_two_pairs_fallback",
        "The two benchmark pairs with the stronger classifier: `difclue` without a fallback, "
        "`fallback_centre` the default since."),
    "difclue_digits_extend": (
        "--pairs random 10 --variants difclue,extend_2,extend_3 --output difclue_digits_extend",
        "The same 10 pairs again: `difclue` is the scan with the centre fallback and no doublings past "
        "the ladder (the default before this run), `extend_3` today's default (`extend_decodes=3`)."),
    "difclue_digits_two_pairs_extend": (
        "--pairs 1,7 0,6 --n-queries 100 --classifier resnet18:15 --variants difclue,extend_3 "
        "--output difclue_digits_two_pairs_extend",
        "The two benchmark pairs: `difclue` without the doublings past the ladder, `extend_3` today's default."),
    "difclue_digits_all_pairs_extend": (
        "--pairs all --variants difclue,no_extension --output difclue_digits_all_pairs_extend",
        "All 45 pairs with today's defaults (`difclue`: the scan, up to 3 doublings past it, the centre "
        "fallback) and without the doublings (`no_extension`, the default before)."),
    "difclue_digits_10000": (
        "--pairs random 10 --variants difclue --encoder-steps 10000 --output difclue_digits_10000",
        "The 10 pairs of the first table, the defaults of that run (K-means modes), the DiffAE continued "
        "from 5000 to 10000 steps (the file shipped since)."),
    "difclue_digits_all_pairs_10000": (
        "--pairs all --variants kmeans,gmm --output difclue_digits_all_pairs_10000",
        "All 45 pairs with this release's shipped DiffAE (10000 steps) and defaults, the modes from "
        "either clustering (`gmm`: `ModalDirectionFinder(clustering='gmm')`, the default since this run; "
        "`kmeans`: the paper's)."),
    "difclue_digits_depth": (
        "--pairs random 10 --variants difclue,depth_0.7,depth_0.5 --output difclue_digits_depth "
        "(then `--variants no_mode_check,confidence_0.5,paper_direction --add-to`)",
        "The 10 pairs, this release's defaults (10000-step DiffAE, mixture modes), and what might make "
        "edits rather than templates: edits through part of the decode chain only "
        "(`DifCluE(edit_depth=0.7)` / `0.5`), no mode check, a lower confidence, the paper's direction."),
    "difclue_digits_two_pairs_10000": (
        "--pairs 1,7 0,6 --n-queries 100 --classifier resnet18:15 --variants kmeans,gmm "
        "--output difclue_digits_two_pairs_10000",
        "The two benchmark pairs with the stronger classifier, the 10000-step DiffAE, either clustering."),
    "difclue_digits_all_pairs_guidance": (
        "--pairs all --variants gmm,guidance_2,guidance_2_half,difclue,retry_fallback --output "
        "difclue_digits_all_pairs_guidance (then `--variants direct_retry_3,direct_retry_4 --add-to`, then "
        "`--variants direct_local_3,local_3_no_retry --add-to`)",
        "All 45 pairs, the ladder stopping each pair at its first accepted rung (same counterfactuals, fewer "
        "calls): `gmm` without the guided retry (the default two releases ago), `difclue` with it (4 rungs, "
        "the unguided extension and centre fallback, then the guided search and fallback again: the previous "
        "default), `guidance_2` / `guidance_2_half` latent guidance on every decode / on the noisiest "
        "half of its steps instead, `retry_fallback` the retry's guided fallback alone (`retry_search=False`); "
        "`direct_retry_3` / `_4` a 3- / 4-rung ladder then straight to the guided centre fallback "
        "(`unguided_rescue=False`); `direct_local_3` the same with the 'local' fallback (the query's nearest "
        "half of the mode, then the centre): the previous defaults; `local_3_no_retry` that ladder and "
        "fallback without guidance (what an encoder without a null latent gets)."),
    "difclue_digits_two_pairs_guidance": (
        "--pairs 1,7 0,6 --n-queries 100 --classifier resnet18:15 --variants gmm,difclue "
        "--output difclue_digits_two_pairs_guidance (then `--variants direct_local_3 --add-to`)",
        "The two benchmark pairs with the stronger classifier: `gmm` without the guided retry, `difclue` "
        "with it (the previous default), `direct_local_3` the defaults of the release after."),
    "difclue_digits_all_pairs_interval": (
        "--pairs all --variants difclue,direct_local_3,interval_0.2_0.6,interval_noisiest_half "
        "--output difclue_digits_all_pairs_interval",
        "All 45 pairs: `difclue` **today's defaults** (every decode guided, scale 2, in the steps with "
        "0.1 T <= t <= 0.6 T), `direct_local_3` the previous defaults (an unguided ladder, then the local "
        "fallback guided at every step), `interval_0.2_0.6` / `interval_noisiest_half` guidance on every "
        "decode in another interval."),
    "difclue_digits_two_pairs_interval": (
        "--pairs 1,7 0,6 --n-queries 100 --classifier resnet18:15 --variants difclue,direct_local_3 "
        "--output difclue_digits_two_pairs_interval",
        "The two benchmark pairs with the stronger classifier: `difclue` today's defaults, `direct_local_3` "
        "the previous ones."),
}


def difclue_pairs_section(r, command="--pairs random 10", note="", glossary=True):
    s = r["settings"]
    pairs = ", ".join(f"{a}/{b}" for a, b in s["pairs"]) if len(s["pairs"]) <= 12 else f"all {len(s['pairs'])}"
    head = (f"**DifCluE over many digit pairs** (`benchmarks/difclue_digits.py {command}`; "
            f"{_machine(r)}; {r['wall_time_s'] / 60:.0f} min): pairs {pairs}; "
            f"a {s['classifier'].split(':')[0]} classifier ({s['classifier'].split(':')[1]} epochs) per pair, "
            f"{s['n_queries']} held-out negatives per pair. ")
    if glossary:
        head += ("One DiffAE (shipped `digits16`) for all pairs, an independent classifier never used in "
                 f"generation ({s['independent_classifier']}). Each cell: mean over pairs [min - max]; the worst "
                 "pair of conversion is named. Independent validity = share of flipped CFs the independent "
                 "classifier also assigns to the target. Spread = a mode's CFs' mean pairwise L1 across queries "
                 "over the queries' (1: CFs differ as much as the queries; 0: one template). Nearer query = share "
                 "of CFs nearer their query than the mode's mean CF. Off-data = mean RMS distance of CFs to the "
                 "nearest training image over the same for the queries (1 = as near as real digits); 'failed' = "
                 "CFs that did not flip. ")
    else:
        head += "Columns as in the first many-pairs table. "
    lines = [head + note, "",
             "| variant | percent conversion | worst pair | flip rate | independent validity | spread | "
             "nearer query | off-data (all) | off-data (failed) | mode ARI | NFE / CF |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(stats, digits=2):
        if stats is None:
            return "n/a"
        return f"{stats['mean']:.{digits}f} [{stats['min']:.{digits}f} - {stats['max']:.{digits}f}]"

    for name, m in r["summary"].items():
        pc = m["percent_conversion"]
        worst = f"{pc['min_pair'][0]}/{pc['min_pair'][1]} ({pc['min']:.2f})"
        lines.append(f"| {name} | {cell(pc)} | {worst} | {cell(m.get('flip_rate'))} | "
                     f"{cell(m.get('independent_validity'))} | {cell(m.get('spread_ratio'))} | "
                     f"{cell(m.get('closer_to_query'))} | {cell(m.get('nn_ratio'))} | "
                     f"{cell(m.get('nn_ratio_failed'))} | {cell(m.get('mode_recovery_ari'))} | "
                     f"{m['n_function_evals']['mean']:.1f} |")
    return lines


def modes_pairs_section(r, command=""):
    encoder = r["settings"]["encoder"]
    which = (f"the shipped DiffAE ({encoder.get('n_steps', 5000)} steps)" if "pretrained" in str(encoder.get("path"))
             else f"a DiffAE of {encoder.get('n_steps', '?')} steps ({encoder.get('provenance') or 'trained by the script'})")
    lines = [f"**Mode recovery on all 45 digit pairs** (`benchmarks/modes_digits_pairs.py{command}`; {_machine(r)}): "
             f"2 modes per pair from the {r['settings']['latent_dim']}-d latents of {which}, ARI against "
             "the digits, by clustering.", "",
             "| clustering | mean ARI | 10% quantile | worst pair | share of pairs >= 0.9 | 1/7 | 0/6 |",
             "|---|---|---|---|---|---|---|"]
    for name, m in r["summary"].items():
        lines.append(f"| {name} | {m['mean']:.3f} | {m['q10']:.3f} | {m['min_pair'].replace(',', '/')} "
                     f"({m['min']:.2f}) | {m['share_ge_0.9']:.2f} | {m['pair_1_7']:.2f} | {m['pair_0_6']:.2f} |")
    return lines


def compare_section(r):
    s = r["settings"]
    lines = [f"**DifCluE vs DiME vs FastDiME** (`benchmarks/compare_methods.py`; {_machine(r)}): same DiffAE, "
             f"classifier and {s['n_queries']} queries (digits {s['pair']} positive), "
             f"{s['n_samples']} samples per query for DiME/FastDiME, 2 modes for DifCluE.", "",
             "| method | flip rate | L1 | sigma_L | NFE / CF | s / CF | NFE ratio to DifCluE |", "|---|---|---|---|---|---|---|"]
    for name, m in r["results"].items():
        ratio = r["ratios"][name]["nfe_ratio_to_difclue"]
        lines.append(f"| {name} | {_f(m['flip_rate'], 2)} | {_f(m['l1'], 3)} | {_f(m['sigma_L'], 3)} | "
                     f"{m['n_function_evals']:.0f} | {m['seconds_per_counterfactual']:.3f} | {ratio:.1f}x |")
    return lines


def dropout_section(r):
    rows = r["by_latent_dropout"]
    return [f"**Cost of the null latent** (`benchmarks/latent_dropout_cost.py`; {_machine(r)}): "
            f"{r['settings']['max_steps']} steps each; held-out reconstruction MSE with inverted noise: "
            f"{_f(rows['0.0']['mse_inverted_noise'], 4)} without latent dropout, "
            f"{_f(rows['0.1']['mse_inverted_noise'], 4)} with p = 0.1 "
            f"(ratio {r['mse_ratio_dropout_to_none']:.2f})."]


def memory_section(r):
    small, large = r["rows"][0], r["rows"][-1]
    return [f"**Bounded memory** (`benchmarks/memory_explain.py`; {_machine(r)}): explaining "
            f"{large['n']} images peaks at {large['peak_rss_mb']:.0f} MB resident against "
            f"{small['peak_rss_mb']:.0f} MB for {small['n']} (ratio {r['peak_ratio_large_to_small']:.2f}; "
            f"the returned arrays themselves are {large['result_mb']:.0f} MB)."]


def memory_fit_section(r):
    s = r["settings"]
    small_n, large_n = s["sizes"]
    lines = [f"**Memory of `fit` on image files** (`benchmarks/memory_fit.py`; {_machine(r)}): peak resident "
             f"memory of a {s['steps']}-step fit on {small_n:,} vs {large_n:,} {s['image']} files, each in a fresh "
             f"process; the {large_n - small_n:,} extra images would take {r['extra_images_float32_mb']:.0f} MB "
             "as float32 (goals: ratio <= 1.1, extra < 1/4 of that).", "",
             "| input to fit | peak MB, small | peak MB, large | ratio | extra MB (share of float32) | goals met |",
             "|---|---|---|---|---|---|"]
    labels = {"folder": "folder path (streamed)", "paths": "list of paths (streamed)",
              "array": "uint8 array (load_image_folder)", "baseline_paths": f"list of paths, before ({s.get('baseline_commit')})"}
    for name, row in r["results"].items():
        small, large = row["rows"][0], row["rows"][-1]
        met = "yes" if row["goal_ratio_met"] and row["goal_extra_met"] else "no"
        lines.append(f"| {labels.get(name, name)} | {small['peak_rss_mb']:.0f} | {large['peak_rss_mb']:.0f} | "
                     f"{row['peak_ratio']:.2f} | {row['extra_mb']:.0f} ({row['extra_over_float32_of_extra_images']:.2f}) | "
                     f"{met} |")
    lines += ["", f"Most of the peak is the model's training step itself (the default {s['image'].split()[0]} "
              f"DiffAE, batch {s['batch_size']}), the same for every input."]
    return lines


def train_speed_section(r):
    s = r["settings"]
    lines = [f"**Training and inference speed on this CPU** (`benchmarks/train_speed.py`; {_machine(r)}): "
             f"default RGB architectures, batch {s['batch_size']}, one torch thread; inference with "
             f"{r['rows'][0]['ddim_steps']} DDIM steps. The machine was shared with other jobs whose load "
             "changed between runs: compare rows within one table, not across tables.", "",
             "| px | parameters | train img/s | encode img/s | invert img/s | decode img/s |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['image_size']} | {row['n_parameters'] / 1e6:.2f}M | {row['train_images_per_s']:.1f} | "
                     f"{row['encode_images_per_s']:.0f} | {row['invert_images_per_s']:.1f} | "
                     f"{row['decode_images_per_s']:.1f} |")
    if r.get("ddp"):
        lines += ["", f"DDP on the CPU ({s['ddp_image_size']} px, global batch {s['batch_size']}, gloo):", "",
                  "| processes x threads | train img/s | s/step |", "|---|---|---|"]
        for row in r["ddp"]:
            lines.append(f"| {row['processes']} x {row['threads_per_process']} | {row['train_images_per_s']:.1f} | "
                         f"{row['s_per_step']:.2f} |")
    bf16 = r.get("bf16_inference_digits16")
    if bf16:
        fp32, low = bf16["rows"]
        lines += ["", f"bf16 autocast in inference (CPU autocast; the cached 16 px digits DiffAE, {bf16['n_images']} "
                  f"held-out images, {bf16['ddim_steps']} DDIM steps): reconstruction MSE {low['reconstruction_mse']:.5f} "
                  f"vs {fp32['reconstruction_mse']:.5f} in fp32, {low['mse_to_fp32_reconstruction']:.1e} between the "
                  f"two reconstructions; {low['images_per_s']:.1f} vs {fp32['images_per_s']:.1f} img/s."]
    return lines


def gpu_speed_section(r):
    lines = [f"**GPU speed** (`benchmarks/gpu_speed.py`; {r.get('gpu')}, {r['date']}): ffhq128 architecture.", "",
             "| px | precision | compile | train img/s | encode img/s | invert img/s | decode img/s | train peak GB |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['image_size']} | {row['precision']} | {row['compile']} | out of memory | | | | |")
            continue
        lines.append(f"| {row['image_size']} | {row['precision']} | {row['compile']} | {row['train_images_per_s']:.0f} | "
                     f"{row['encode_images_per_s']:.0f} | {row['invert_images_per_s']:.1f} | "
                     f"{row['decode_images_per_s']:.1f} | {row['train_peak_gpu_memory_gb']:.1f} |")
    return lines


def shapes_section(r):
    lines = [f"**Shapes protocol** (`benchmarks/shapes_protocol.py`; {_machine(r)}):", ""]
    try:  # the lines are rebuilt from the JSON: a change of layout needs no rerun
        from shapes_protocol import readme_lines
        lines += readme_lines(r)
    except (ImportError, KeyError):
        lines += r.get("readme_lines", ["(see benchmarks/results/shapes_protocol.json)"])
    return lines


def shapes_variants_section(r):
    s = r["settings"]
    lines = [f"**DifCluE's options on shapes** (`benchmarks/shapes_difclue_variants.py`; {_machine(r)}; "
             f"{r['wall_time_s'] / 60:.0f} min): the shapes protocol's DiffAE, one classifier (accuracy "
             f"{s['classifier_accuracy']:.3f}; another training than the protocol run's), oracle and "
             f"{s['n_queries_per_class']} queries per class held fixed; only DifCluE's options change. "
             "Positives must lose their red or their border to flip.", "",
             "| variant | flip rate | negatives | positives (red / border) | percent conversion per mode | FID "
             "| spread ratio (flipped) | NFE / CF | accepted | fallback used |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        pc = v["percent_conversion"]
        modes = " / ".join(f"{m['attribute']} {m['rate']:.2f}" for m in pc["per_mode"]) + f" (mean {pc['mean']:.2f})"
        by_sub = " / ".join(f"{x:.2f}" for x in v["flip_rate_positives_by_subclass"].values())
        lines.append(f"| {name} | {v['flip_rate']:.2f} | {v['flip_rate_negatives']:.2f} | "
                     f"{v['flip_rate_positives']:.2f} ({by_sub}) | {modes} | {_f(v['fid'], 1)} | "
                     f"{_f(v.get('spread_ratio_flipped'), 2)} | {v['n_function_evals']:.0f} | {v['info'].get('accepted_rate', 0):.2f} | "
                     f"{v['info'].get('fallback_rate', 0):.2f} |")
    return lines


def shapes_length_section(runs):
    """DifCluE on shapes by DiffAE training length (shapes_difclue_variants.py, one JSON per length)."""
    first = runs[0]
    lines = [f"**DiffAE training length on shapes** (`benchmarks/shapes_difclue_variants.py --encoder-steps N`; "
             f"{_machine(first)}): one training run of the protocol's DiffAE recipe, saved at each length "
             "(continued with its optimizer state); the same classifier, oracle and queries for every length. "
             "Semantic control = share of latent/noise swaps (pairs of held-out scenes that differ in the "
             "attribute) whose decode the oracle reads with the latent's attribute, then with the noise's.", "",
             "| DiffAE steps | semantic control: red (latent / noise) | border (latent / noise) | DifCluE flip "
             "(negatives / positives) | percent conversion | FID | decode_20: flip / FID |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        sc = r.get("semantic_control", {})
        cells = [f"{sc[n]['shows_latent_class']:.2f} / {sc[n]['shows_noise_class']:.2f}" if n in sc else "n/a"
                 for n in ("color_is_red", "has_border")]
        d, d20 = r["variants"].get("default"), r["variants"].get("decode_20")
        flip = f"{d['flip_rate']:.2f} ({d['flip_rate_negatives']:.2f} / {d['flip_rate_positives']:.2f})"
        alt = f"{d20['flip_rate']:.2f} / {_f(d20['fid'], 1)}" if d20 else "n/a"
        lines.append(f"| {r['settings'].get('encoder_steps', 4000)} | {cells[0]} | {cells[1]} | {flip} | "
                     f"{d['percent_conversion']['mean']:.2f} | {_f(d['fid'], 1)} | {alt} |")
    return lines


SHAPES_LENGTHS = ("shapes_difclue_variants", "shapes_difclue_variants_6000", "shapes_difclue_variants_8000")


def main():
    sections = []
    for name, fn in (("diffae_digits", diffae_section), ("difclue_digits", difclue_section),
                     *((name, lambda r, c=c, n=n, g=(i == 0): difclue_pairs_section(r, c, n, g))
                       for i, (name, (c, n)) in enumerate(PAIRS_RUNS.items())),
                     ("modes_digits_pairs", modes_pairs_section),
                     ("modes_digits_pairs_5000",
                      lambda r: modes_pairs_section(r, " --encoder-steps 5000 --output modes_digits_pairs_5000")),
                     ("compare_methods", compare_section), ("latent_dropout_cost", dropout_section),
                     ("memory_explain", memory_section), ("shapes_protocol", shapes_section),
                     ("shapes_difclue_variants", shapes_variants_section),
                     ("shapes_difclue_variants_guidance", shapes_variants_section),
                     ("shapes_difclue_variants_direct", shapes_variants_section),
                     ("shapes_difclue_variants_interval", shapes_variants_section),
                     ("shapes_difclue_variants_8000", lambda r: shapes_length_section(
                         [x for x in map(_load, SHAPES_LENGTHS) if x is not None and "semantic_control" in x])),
                     ("memory_fit", memory_fit_section), ("train_speed", train_speed_section),
                     ("gpu_speed", gpu_speed_section)):
        result = _load(name)
        if result is not None:
            sections.append("\n".join(fn(result)))
    body = "\n\n".join(sections) if sections else "No benchmark results yet: run the scripts in benchmarks/."
    text = README.read_text()
    block = f"{START}\n{body}\n{END}"
    if START in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.replace("RESULTS_TABLE", block)
    README.write_text(text)
    print(body)


if __name__ == "__main__":
    main()
