"""Shared set-up for the benchmark scripts: data split, cached models, JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.model_selection import train_test_split

from skcfx import DiffAEEncoder
from skcfx.datasets import load_digits_images

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Trained models are cached here between runs (SKCFX_BENCH_CACHE moves it, e.g. to share it between checkouts).
CACHE = Path(os.environ.get("SKCFX_BENCH_CACHE", HERE / "output"))

# The default DiffAE recipe on 16 px digits (also used by the demo; the shipped digits16 is it, made
# in two stages: see make_pretrained.py).
DIGITS_ENCODER = dict(max_steps=10000, batch_size=64, learning_rate=1e-3, encode_steps=20, decode_steps=20,
                      latent_dropout=0.1, random_state=0)


def digits_split(image_size=16, test_size=0.3, seed=0):
    """Stratified train/test split of the bundled digits as images."""
    X, y = load_digits_images(image_size=image_size)
    return train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)


def load_or_fit(path, fit):
    """The object saved (joblib) at ``path``, else ``fit()``'s result, saved there for the next run.

    Returns ``(obj, fit_s)``: ``fit_s`` is the seconds ``fit()`` took, None when ``obj`` came from
    the cache. For models other than the DiffAE (see :func:`load_or_fit_encoder`).
    """
    path = Path(path)
    if path.is_file():
        return joblib.load(path), None
    start = time.perf_counter()
    obj = fit()
    fit_s = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(obj, path)
    return obj, fit_s


def load_or_fit_encoder(path, X, params, *, use_cache=True, device="auto"):
    """The DiffAE saved at ``path`` (with ``use_cache``), else one fitted on ``X`` and saved there.

    Returns ``(encoder, from_cache)``; a reused encoder keeps the training time recorded when it
    was trained (``fit_time_s_``).
    """
    path = Path(path)
    if use_cache and path.is_file():
        return DiffAEEncoder.load(path, device=device), True
    encoder = DiffAEEncoder(device=device, **params).fit(X)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        encoder.save(path)
    return encoder, False


def add_encoder_args(parser):
    """The digits DiffAE recipe's command-line options (other than the shipped one's)."""
    parser.add_argument("--encoder-steps", type=int, default=None,
                        help=f"DiffAE training steps (default {DIGITS_ENCODER['max_steps']}: the shipped digits16)")
    parser.add_argument("--latent-dim", type=int, default=None, help="semantic latent width (default 32)")


def encoder_overrides(args):
    """``cached_encoder`` keyword arguments from :func:`add_encoder_args`' options."""
    return {"max_steps": args.encoder_steps, "latent_dim": args.latent_dim}


def cached_encoder(X_train, name="digits16", verbose=True, **overrides):
    """Train the digits DiffAE once and reuse it from benchmarks/output/ on later runs.

    ``overrides`` change the recipe (None values are ignored); a latent width other than the
    default gets its own cache name (``digits16_z64``).
    """
    params = {**DIGITS_ENCODER, **{k: v for k, v in overrides.items() if v is not None}}
    if params.get("latent_dim") is not None:
        name = f"{name}_z{params['latent_dim']}"
    path = CACHE / f"encoder_{name}_{params['max_steps']}.pt"
    if name == "digits16" and params == DIGITS_ENCODER and not path.is_file():
        # The shipped pretrained DiffAE is this recipe on this split (benchmarks/make_pretrained.py):
        # reuse it instead of 20-30 min of training.
        encoder = DiffAEEncoder.from_pretrained("digits16")
        encoder.set_params(encode_steps=params["encode_steps"], decode_steps=params["decode_steps"])
        return encoder, {"cached": True, "path": "skcfx/pretrained (digits16)", "fit_time_s": encoder.fit_time_s_,
                         "n_steps": int(encoder.n_steps_)}
    encoder, cached = load_or_fit_encoder(path, X_train, {**params, "verbose": verbose})
    if cached:
        encoder.set_params(**{k: v for k, v in params.items() if k in ("encode_steps", "decode_steps")})
    info = {"cached": cached, "path": str(path), "fit_time_s": encoder.fit_time_s_, "n_steps": int(encoder.n_steps_)}
    notes = path.with_suffix(".json")  # how a cached file was made, when not by this function
    if notes.is_file():
        info.update(json.loads(notes.read_text()))
    return encoder, info


def machine_info():
    """Machine, versions, thread settings and the code's commit, for benchmark JSON files."""
    import sklearn
    import timm
    import torch

    import skcfx

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {"skcfx": skcfx.__version__, "torch": torch.__version__, "timm": timm.__version__,
                     "sklearn": sklearn.__version__, "numpy": np.__version__},
        "commit": commit,
        "uncommitted_changes": dirty,
    }


def write_json(name, payload):
    """Write ``benchmarks/results/<name>.json`` with machine info and a timestamp."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_default))
    print(f"wrote {path}")
    return path


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def semantic_control(encoder, read, X, y, n_pairs=200, seed=0):
    """Share of latent/noise swaps whose decode shows the latent's class (what latent edits need).

    For pairs (a, b) of images with different labels, decode b's semantic latent with a's
    inverted noise ``x_T``; ``read`` (an oracle: images ``(m, H, W, C)`` in [0, 1] -> labels)
    says whether the result shows b's class (the latent decides) or a's (the noise decides).
    """
    rng = np.random.default_rng(seed)
    a = rng.choice(len(X), size=min(n_pairs, len(X)), replace=False)
    b = rng.permutation(a)
    keep = np.asarray(y)[a] != np.asarray(y)[b]
    a, b = a[keep], b[keep]
    noise = encoder.encode_stochastic(X[a])
    swapped = encoder.inverse_transform(encoder.transform(X[b]), noise=noise)
    labels = np.asarray(read(swapped))
    return {"n_pairs": int(len(a)), "shows_latent_class": float(np.mean(labels == np.asarray(y)[b])),
            "shows_noise_class": float(np.mean(labels == np.asarray(y)[a])),
            "encode_steps": int(encoder.encode_steps), "decode_steps": int(encoder.decode_steps)}


#: DifCluE's step search as the defaults before guidance_interval=(0.1, 0.6) ran it: an unguided
#: ladder (the fallback guided at every step). Benchmark rows of earlier defaults add it to keep
#: measuring what they measured.
UNGUIDED_SEARCH = dict(guidance_scale=0.0, guidance_interval=1.0)


def flipped_edit_specificity(explanation):
    """Edit specificity of the flipped counterfactuals of one explanation (``skcfx.metrics.edit_specificity``).

    Returns ``{"spread_ratio_flipped", "closer_to_query_flipped"}``: a mode's spread relative to
    its queries', and the share closer to their query than to the mode's mean counterfactual;
    methods without modes (DiME) are judged slot by slot. Nothing flipped: NaN (written as null).
    """
    from skcfx.metrics import edit_specificity

    e = explanation
    k = e.success.shape[1]
    flipped = e.success & (e.cf_target_class >= 0)
    slots = np.where(e.mode_ids >= 0, e.mode_ids, np.arange(k)[None, :])
    spec = (edit_specificity(e.images, e.counterfactuals, np.where(flipped, slots, -1)) if flipped.any()
            else {"spread_ratio": float("nan"), "closer_to_query": float("nan")})
    return {"spread_ratio_flipped": spec["spread_ratio"], "closer_to_query_flipped": spec["closer_to_query"]}


def edits_and_validity(explanation, independent_predict):
    """Independent validity and edit specificity of one explanation, for every benchmark table.

    ``independent_predict(images) -> labels`` is a classifier trained apart from the explained one
    (another architecture and seed, never used while generating). Returns the share of flipped
    counterfactuals it also assigns to their target (``skcfx.metrics.independent_validity``) and
    :func:`flipped_edit_specificity`.
    """
    from skcfx.metrics import independent_validity

    e = explanation
    n, k = e.success.shape
    predicted = np.asarray(independent_predict(e.counterfactuals.reshape((n * k,) + e.images.shape[1:])))
    valid = e.cf_target_class >= 0
    targets = np.where(valid, e.classes[np.maximum(e.cf_target_class, 0)], e.classes[0])
    flipped = e.success & valid
    return {"independent_validity": independent_validity(predicted.reshape(n, k), targets, flipped),
            **flipped_edit_specificity(e)}
