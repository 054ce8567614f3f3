"""Pretrained models shipped inside the package: weights only, loaded without running code.

``DiffAEEncoder.from_pretrained("digits16")`` (or :func:`load_pretrained`) returns a fitted
encoder from a file installed with skcfx, so a first run does not have to train a diffusion
autoencoder for 20 minutes. Every file is written by the project's own training code, and the
command that reproduces it is recorded in its entry (``reproduce``); the files are skcfx
checkpoints (:meth:`DiffAEEncoder.save`) read with ``torch.load(weights_only=True)``.

>>> from skcfx.pretrained import list_pretrained
>>> list_pretrained()
['digits16']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PretrainedSpec", "list_pretrained", "get_spec", "pretrained_path", "load_pretrained"]

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PretrainedSpec:
    """What one shipped file is and how it was made.

    Attributes
    ----------
    name : str
        Name accepted by ``DiffAEEncoder.from_pretrained``.
    filename : str
        File inside ``skcfx/pretrained/``.
    description : str
    train_data : str
        The images it was trained on.
    reproduce : str
        The command, run from the repository root, that rewrites the file.
    reconstruction_mse : float
        Held-out reconstruction MSE in [-1, 1] units (inverted noise, 20 DDIM steps each way)
        measured by that command; ``tests/test_pretrained.py`` checks the shipped file against it.
    latent_probe_accuracy : float
        Held-out digit accuracy of a logistic regression on the semantic latents, measured by that
        command (the latent, not only the inverted noise, knows the digit).
    """

    name: str
    filename: str
    description: str
    train_data: str
    reproduce: str
    reconstruction_mse: float
    latent_probe_accuracy: float


_REGISTRY = {
    "digits16": PretrainedSpec(
        name="digits16",
        filename="diffae_digits16.pt",
        description="DiffAE 'tiny16' (0.19M parameters, 32-d latent, null latent for guidance) on "
                    "16x16 grayscale digits; the benchmark recipe benchmarks/_common.py::DIGITS_ENCODER "
                    "(10000 steps of batch 64, learning rate 1e-3, latent dropout 0.1, random_state=0; "
                    "made as 5000 steps, then 5000 more with the optimizer restarted).",
        train_data="the 1257 training digits of benchmarks/_common.py::digits_split() (scikit-learn's "
                   "bundled digits, stratified 70/30 split, seed 0); the other 540 are held out.",
        reproduce="python benchmarks/make_pretrained.py",
        reconstruction_mse=0.0040,
        latent_probe_accuracy=0.948,
    ),
}


def list_pretrained():
    """Names of the shipped pretrained models."""
    return sorted(_REGISTRY)


def get_spec(name):
    """The :class:`PretrainedSpec` of ``name``; unknown names raise ``ValueError`` listing valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"no pretrained model named {name!r}; shipped ones: {list_pretrained()}.")
    return _REGISTRY[name]


def pretrained_path(name):
    """Path of the file of the pretrained model ``name`` inside the installed package."""
    path = _HERE / get_spec(name).filename
    if not path.is_file():
        raise ValueError(
            f"the file of pretrained model {name!r} is missing from this installation ({path}); "
            f"rewrite it with `{get_spec(name).reproduce}` from the repository root."
        )
    return path


def load_pretrained(name, **params):
    """A fitted :class:`~skcfx.DiffAEEncoder` from the shipped model ``name``.

    Parameters
    ----------
    name : str
        One of :func:`list_pretrained`.
    **params
        Estimator parameters to override (e.g. ``device='cpu'``, ``decode_steps=50``).

    Returns
    -------
    DiffAEEncoder
    """
    from ..encoder import DiffAEEncoder

    return DiffAEEncoder.from_pretrained(pretrained_path(name), **params)
