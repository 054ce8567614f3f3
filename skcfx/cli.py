"""The ``skcfx`` command line: train a diffusion autoencoder, explain a classifier, write a report.

    skcfx train FOLDER -o encoder.pt [--image-size 32] [--max-steps 20000]
    skcfx explain --encoder encoder.pt --classifier CLASSIFIER --train FOLDER IMAGE_OR_FOLDER... -o OUT
    skcfx report OUT/explanation.npz -o report.html

``python -m skcfx`` is the same program. Every command has ``--help``. Errors on bad input (missing
files, images of the wrong size, a file that is not a checkpoint) print one line that says what is
wrong and exit with status 1; wrong usage exits with status 2, an interrupt with 130.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import __version__

__all__ = ["main", "build_parser"]

_SKLEARN_SUFFIXES = (".joblib", ".pkl", ".pickle")
_EXIT_ERROR, _EXIT_INTERRUPT = 1, 130


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _brief(exc, limit=240):
    """The first line of an exception's message, shortened: torch's messages run for paragraphs."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _say(message):
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- images


def _image_files(folder):
    """Image files of a folder: directly inside it, or in its class subfolders (sorted)."""
    from .datasets import IMAGE_EXTENSIONS

    def images_in(directory):
        return sorted(f for f in directory.iterdir()
                      if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)

    files = images_in(folder)
    for sub in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files += images_in(sub)
    if not files:
        raise CLIError(f"'{folder}' holds no image files (directly or in its subfolders).")
    return files


def _expand(inputs):
    """Files named on the command line, folders replaced by the image files they hold."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += _image_files(path)
        elif path.is_file():
            files.append(path)
        else:
            raise CLIError(f"no such file or folder: '{path}'.")
    return files


def _read_images(files, image_shape, resize, what):
    """Images of ``image_shape`` (H, W, C); resized (centre crop, bicubic) only with ``resize``."""
    from ._images import check_images
    from .datasets import _load_resized, _to_channels

    h, w, c = image_shape
    if resize:
        images = []
        for file in files:
            try:
                images.append(_to_channels(_load_resized(file, (h, w), center_crop=True)[0], c))
            except (OSError, ValueError) as exc:
                raise CLIError(f"cannot read '{file}' as an image ({exc}).") from exc
        return np.clip(np.stack(images), 0.0, 1.0).astype(np.float32)
    for file in files:
        try:
            check_images([file], name=f"{what} '{file}'", image_size=(h, w), n_channels=c)
        except ValueError as exc:
            raise CLIError(f"{exc} Pass --resize to resize and convert images to {h}x{w}x{c}.") from exc
    return check_images(list(files), name=what, image_size=(h, w), n_channels=c)


def _read_labelled_folder(folder, image_shape, resize):
    """``(X, y, class_names)`` of a ``root/<class>/<image>`` folder, images of ``image_shape``."""
    from .datasets import _list_class_files

    root = Path(folder)
    if not root.is_dir():
        raise CLIError(f"--train: no such folder '{root}'.")
    try:
        class_names, files = _list_class_files(root)
    except ValueError as exc:
        raise CLIError(f"--train: {exc}") from exc
    paths = [f for name in class_names for f in files[name]]
    y = np.repeat(np.arange(len(class_names)), [len(files[name]) for name in class_names])
    if len(class_names) < 2:
        raise CLIError(f"--train: '{root}' has one class folder ({class_names[0]}); at least two are needed.")
    return _read_images(paths, image_shape, resize, "--train"), y, class_names


# ----------------------------------------------------------------------------------- models


def _check_torch_file(path, what):
    """Files written by ``torch.save`` (and TorchScript) are zip archives: say so plainly if not."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise CLIError(f"{what}: '{path}' is not a PyTorch file (torch.save and torch.jit.save write zip archives).")


def _load_encoder(name_or_path, device):
    from .encoder import DiffAEEncoder
    from .pretrained import list_pretrained

    path = Path(name_or_path)
    if not path.is_file() and name_or_path not in list_pretrained():
        raise CLIError(f"--encoder: no such file '{path}' (and no shipped model of that name; "
                       f"shipped: {', '.join(list_pretrained())}).")
    if path.is_file():
        _check_torch_file(path, "--encoder")
    try:
        return DiffAEEncoder.from_pretrained(name_or_path, device=device)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise CLIError(f"--encoder: cannot load '{name_or_path}' as a DiffAE checkpoint: {_brief(exc)}") from exc


class InputRange(torch.nn.Module):
    """Maps skcfx's [-1, 1] images onto the value range ``(low, high)`` a user's model expects."""

    def __init__(self, module, low, high):
        super().__init__()
        self.module, self.low, self.high = module, float(low), float(high)

    def forward(self, x):
        return self.module(self.low + (x + 1.0) * (0.5 * (self.high - self.low)))


def _load_state_dict(path):
    if not path.is_file():
        raise CLIError(f"--weights: no such file '{path}'.")
    _check_torch_file(path, "--weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, not a torch file at all
        raise CLIError(f"--weights: '{path}' is not a PyTorch state dict ({_brief(exc)}).") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CLIError(f"--weights: '{path}' does not hold a state dict (a mapping of names to tensors).")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _timm_module(name, weights, n_channels, n_classes):
    import timm

    if weights is None:
        raise CLIError(f"--classifier {name}: a timm architecture needs its trained weights: --weights FILE "
                       "(a state dict saved with torch.save(model.state_dict(), FILE)).")
    state = _load_state_dict(Path(weights))
    if n_classes is None:
        head = timm.create_model(name, pretrained=False, in_chans=n_channels).pretrained_cfg.get("classifier")
        if f"{head}.weight" not in state:
            raise CLIError(f"--weights: no classifier head '{head}.weight' in '{weights}'; pass --num-classes.")
        n_classes = int(state[f"{head}.weight"].shape[0])
    model = timm.create_model(name, pretrained=False, num_classes=n_classes, in_chans=n_channels)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CLIError(f"--weights: '{weights}' does not fit timm '{name}' with {n_classes} classes and "
                       f"{n_channels} input channel(s): {len(missing)} missing keys {missing[:3]}, "
                       f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of another shape {wrong[:3]}.")
    model.load_state_dict(state, strict=True)
    return model


def _load_classifier(spec, weights, n_channels, n_classes, input_range):
    """A classifier from a joblib file, a TorchScript file, or a timm name plus a state dict."""
    path = Path(spec)
    if path.suffix.lower() in _SKLEARN_SUFFIXES:
        if not path.is_file():
            raise CLIError(f"--classifier: no such file '{path}'.")
        import joblib

        try:
            model = joblib.load(path)
        except Exception as exc:  # a pickle can fail in any way
            raise CLIError(f"--classifier: cannot load '{path}' with joblib ({_brief(exc)}).") from exc
        if not hasattr(model, "predict_proba"):
            raise CLIError(f"--classifier: '{path}' holds a {type(model).__name__}, which has no predict_proba.")
        return model
    if path.is_file():
        _check_torch_file(path, "--classifier")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 deprecates TorchScript
                module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise CLIError(f"--classifier: '{path}' is not a TorchScript file ({_brief(exc, 120)}); for a "
                           "state dict give the timm architecture: --classifier NAME --weights FILE.") from exc
    else:
        import timm

        if not timm.is_model(spec):
            raise CLIError(f"--classifier: '{spec}' is neither a file nor a timm architecture name (e.g. resnet18; "
                           "see timm.list_models()).")
        module = _timm_module(spec, weights, n_channels, n_classes)
    low, high = input_range
    return module if (low, high) == (-1.0, 1.0) else InputRange(module, low, high)


# ----------------------------------------------------------------------------------- commands


def _output_file(path, suffixes, what):
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"{what}: '{path}' is a folder; give a file name ending in {suffixes[0]}.")
    if path.suffix.lower() not in suffixes:
        raise CLIError(f"{what}: '{path}' should end in {' or '.join(suffixes)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _training_images(folder, image_size):
    """Every image of ``folder`` (flat or with class subfolders), centre-cropped and resized."""
    from PIL import Image

    from .datasets import _load_resized, _to_channels

    root = Path(folder)
    if not root.is_dir():
        raise CLIError(f"no such folder: '{root}'.")
    files = _image_files(root)
    if image_size is None:
        with Image.open(files[0]) as first:
            width, height = first.size
        if width != height:
            raise CLIError(f"'{files[0]}' is {width}x{height}: pass --image-size to train on square images.")
        image_size = width
    loaded = []
    for file in files:
        try:
            loaded.append(_load_resized(file, (image_size, image_size), center_crop=True))
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read '{file}' as an image ({exc}).") from exc
    channels = 1 if all(gray for _, gray in loaded) else 3
    return np.stack([_to_channels(image, channels) for image, _ in loaded]).astype(np.float32), files


def _cmd_train(args):
    from .encoder import DiffAEEncoder

    output = _output_file(args.output, (".pt",), "--output")
    X, files = _training_images(args.folder, args.image_size)
    _say(f"[1/2] {len(X)} images of {X.shape[1]}x{X.shape[2]}x{X.shape[3]} from '{args.folder}'; training "
         f"{args.max_steps} steps (batch {args.batch_size})")
    encoder = DiffAEEncoder(image_size=X.shape[1], latent_dim=args.latent_dim, max_steps=args.max_steps,
                            batch_size=args.batch_size, learning_rate=args.learning_rate, device=args.device,
                            random_state=args.seed, checkpoint_path=args.checkpoint, verbose=not args.quiet)
    start = time.perf_counter()
    encoder.fit(X)
    sample = X[: min(len(X), 32)]
    mse = float(np.mean((2 * encoder.reconstruct(sample) - 2 * sample) ** 2))
    encoder.set_params(verbose=False, checkpoint_path=None)
    encoder.save(output)
    _say(f"[2/2] trained in {(time.perf_counter() - start) / 60:.1f} min; reconstruction MSE on {len(sample)} "
         f"training images {mse:.4f} ([-1, 1] units)")
    print(f"wrote {output}")
    return 0


def _training_labels(classifier, y, class_names):
    """Folder labels in the classifier's own terms: class names when its classes_ are those names."""
    classes = getattr(classifier, "classes_", None)
    if classes is not None and set(class_names) <= {str(c) for c in np.asarray(classes).tolist()}:
        return np.asarray(class_names, dtype=object)[y].astype(np.asarray(classes).dtype), class_names
    return y, class_names


def _cmd_explain(args):
    from .explainer import CounterfactualExplainer
    from .modes import ModalDirectionFinder

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--output: '{out}' exists and is not a folder.")
    _say(f"[1/5] loading the encoder '{args.encoder}' and the classifier '{args.classifier}'")
    encoder = _load_encoder(args.encoder, args.device)
    shape = encoder.image_shape_
    classifier = _load_classifier(args.classifier, args.weights, shape[2], args.num_classes,
                                  tuple(args.input_range))
    _say(f"[2/5] reading images ({shape[0]}x{shape[1]}x{shape[2]}, the encoder's size)")
    X, y, class_names = _read_labelled_folder(args.train, shape, args.resize)
    files = _expand(args.images)
    queries = _read_images(files, shape, args.resize, "images")
    y, class_names = _training_labels(classifier, y, class_names)
    _say(f"[3/5] fitting the explainer on {len(X)} training images in classes {class_names}")
    n_modes = args.n_modes if args.n_modes == "auto" else int(args.n_modes)
    explainer = CounterfactualExplainer(
        encoder=encoder, direction_finder=ModalDirectionFinder(n_modes=n_modes), classifier=classifier,
        method=args.method, device=args.device, random_state=args.seed, verbose=not args.quiet).fit(X, y)
    target = None
    if args.target is not None:
        if args.target not in class_names:
            raise CLIError(f"--target must be one of the class folders {class_names}, got '{args.target}'.")
        index = class_names.index(args.target)
        target = explainer.classes_[index] if len(explainer.classes_) == len(class_names) else index
    _say(f"[4/5] explaining {len(queries)} images")
    explanation = explainer.explain(queries, target_class=target)
    out.mkdir(parents=True, exist_ok=True)
    explanation.save(out / "explanation.npz")
    _say("[5/5] writing the report")
    names = class_names if len(class_names) == len(explanation.classes) else None
    pages = explanation.to_html(out / "report.html", explainer, X=X, class_names=names,
                                title=f"Counterfactual explanations of {Path(args.classifier).name}",
                                metrics={"images": (", ".join(f.name for f in files[:5])
                                                    + (f" and {len(files) - 5} more" if len(files) > 5 else ""),
                                                    "the explained image files, in query order")})
    if args.save_explainer:
        import joblib

        joblib.dump(explainer, out / "explainer.joblib")
    print(f"flip rate {explanation.flip_rate:.2f} over {len(queries)} images; "
          f"{explanation.n_function_evals:.0f} denoiser calls per counterfactual")
    print(f"wrote {out / 'explanation.npz'} and {pages[0]}" + (f" (+{len(pages) - 1} pages)" if len(pages) > 1 else ""))
    return 0


def _cmd_report(args):
    from .explanation import CounterfactualExplanation

    source = Path(args.explanation)
    if not source.is_file():
        raise CLIError(f"no such file: '{source}'.")
    output = _output_file(args.output, (".html", ".htm"), "--output")
    try:
        explanation = CounterfactualExplanation.load(source)
    except ValueError as exc:
        raise CLIError(f"'{source}' is not an explanation saved by skcfx ({_brief(exc, 120)}).") from exc
    explainer, X = None, None
    if args.explainer is not None:
        import joblib

        explainer = joblib.load(args.explainer)
        if args.train is not None:
            X, _, _ = _read_labelled_folder(args.train, explainer.image_shape_, args.resize)
    pages = explanation.to_html(output, explainer, X=X, class_names=args.class_names)
    print(f"wrote {pages[0]}" + (f" (+{len(pages) - 1} pages)" if len(pages) > 1 else ""))
    return 0


# ----------------------------------------------------------------------------------- parser


def _add_train(sub, common):
    p = sub.add_parser("train", parents=[common], help="train a diffusion autoencoder on a folder of images",
                       description="Train a DiffAE (semantic encoder + DDIM decoder) on every image of FOLDER "
                                   "(directly inside it or in its class subfolders), centre-cropped and resized "
                                   "to --image-size, and save it as an skcfx checkpoint (weights only).")
    p.add_argument("folder", help="folder of images (or of class subfolders of images)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--image-size", type=int, help="side of the square training images (default: the first image's)")
    p.add_argument("--max-steps", type=int, default=20000, help="training steps (default 20000, as DiffAEEncoder: "
                                                                "about 3 h at 28 px on one CPU core)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, help="width of the semantic latent (default: the architecture's)")
    p.add_argument("--checkpoint", help="write a resumable training checkpoint here every 500 steps; an "
                                        "existing one is resumed")
    p.set_defaults(run=_cmd_train)
    return p


def _add_explain(sub, common):
    p = sub.add_parser(
        "explain", parents=[common], help="explain a classifier's decisions on images with counterfactuals",
        description="Fit the explainer on a labelled folder (--train, one subfolder per class: the modes of each "
                    "class are found there), explain the given images (files or folders), and write "
                    "OUTPUT/explanation.npz and OUTPUT/report.html.",
        epilog="CLASSIFIER is a joblib file of a fitted scikit-learn classifier (.joblib/.pkl; it sees flattened "
               "pixels in [0, 1], channels last; joblib runs code from the file: only load files you trust), a "
               "TorchScript file (torch.jit.save), or a timm architecture name with --weights STATE_DICT. Torch "
               "models get (n, C, H, W) images in --input-range and return logits; output j is the j-th class "
               "folder of --train in sorted order.")
    p.add_argument("images", nargs="+", help="image files or folders to explain")
    p.add_argument("--encoder", required=True, help="DiffAE checkpoint (skcfx or published last.ckpt) or the name "
                                                    "of a shipped one (digits16)")
    p.add_argument("--classifier", required=True, help="the model to explain (see below)")
    p.add_argument("--weights", help="state dict for a timm --classifier")
    p.add_argument("--num-classes", type=int, help="outputs of a timm --classifier (default: read from --weights)")
    p.add_argument("--input-range", type=float, nargs=2, default=(-1.0, 1.0), metavar=("LOW", "HIGH"),
                   help="value range a torch classifier expects (default -1 1; 0 1 for ToTensor() inputs)")
    p.add_argument("--train", required=True, help="labelled folder: <class>/<image>")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--method", default="difclue", choices=("difclue", "dime", "fastdime", "dissect"))
    p.add_argument("--n-modes", default="2", help="modes per class: an integer or 'auto' (default 2)")
    p.add_argument("--target", help="class folder every counterfactual should reach (default: the other class)")
    p.add_argument("--resize", action="store_true", help="resize and convert images to the encoder's size "
                                                         "(default: images of another size are an error)")
    p.add_argument("--save-explainer", action="store_true", help="also write OUTPUT/explainer.joblib")
    p.set_defaults(run=_cmd_explain)
    return p


def _add_report(sub, common):
    p = sub.add_parser("report", parents=[common], help="write the HTML report of a saved explanation",
                       description="Write the HTML report of an explanation saved by 'skcfx explain' (or "
                                   "CounterfactualExplanation.save). With --explainer (from --save-explainer) "
                                   "it also holds the named modes, importance curves and the latent map.")
    p.add_argument("explanation", help="explanation.npz")
    p.add_argument("-o", "--output", required=True, help="report to write (.html)")
    p.add_argument("--explainer", help="explainer.joblib written by 'skcfx explain --save-explainer' (runs code "
                                       "from the file: only your own)")
    p.add_argument("--train", help="labelled folder for the latent map's background (with --explainer)")
    p.add_argument("--resize", action="store_true", help="resize --train images to the explainer's size")
    p.add_argument("--class-names", nargs="+", help="display names of the classes, in order")
    p.set_defaults(run=_cmd_report)
    return p


def build_parser():
    """The argument parser of the ``skcfx`` command."""
    parser = argparse.ArgumentParser(prog="skcfx", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"skcfx {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto", help="'auto' (a GPU when torch sees one), 'cpu', 'cuda', 'cuda:N'")
    common.add_argument("--seed", type=int, default=0, help="random_state of everything fitted (default 0)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_explain, _add_report):
        add(sub, common)
    return parser


def main(argv=None):
    """Run the ``skcfx`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CLIError as exc:
        _say(f"skcfx {args.command}: error: {exc}")
    except (ValueError, TypeError, FileNotFoundError) as exc:
        _say(f"skcfx {args.command}: error: {_brief(exc, 400)}")
    except KeyboardInterrupt:
        _say(f"skcfx {args.command}: interrupted")
        return _EXIT_INTERRUPT
    return _EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
