"""skcfx: counterfactual explanations for image classifiers, as scikit-learn estimators.

Estimators
----------
DiffAEEncoder
    Diffusion autoencoder (semantic encoder + conditional DDIM decoder).
ModalDirectionFinder
    Modes of each class in latent space and a direction towards each (DifCluE).
CounterfactualExplainer
    Counterfactual explanations with DifCluE, DiME or FastDiME.

Subpackages: :mod:`skcfx.classifiers` (TimmClassifier and adapters), :mod:`skcfx.datasets`,
:mod:`skcfx.metrics`, :mod:`skcfx.methods`, :mod:`skcfx.diffusion` (networks and samplers),
:mod:`skcfx.protocols` (the papers' evaluation protocols), :mod:`skcfx.report` (the HTML report),
:mod:`skcfx.pretrained` (shipped weights); the command line is :mod:`skcfx.cli` (``python -m skcfx``).
"""

__version__ = "0.1.0"

from .encoder import DiffAEEncoder  # noqa: E402  (encoder reads __version__)
from .explainer import CounterfactualExplainer  # noqa: E402
from .explanation import CounterfactualExplanation  # noqa: E402
from .modes import ModalDirectionFinder  # noqa: E402

__all__ = [
    "CounterfactualExplainer",
    "CounterfactualExplanation",
    "DiffAEEncoder",
    "ModalDirectionFinder",
    "__version__",
]

# Subpackages load on first use (``import skcfx; skcfx.metrics.flip_rate(...)``), as in scikit-learn.
_SUBMODULES = ("classifiers", "datasets", "diffusion", "methods", "metrics", "pretrained", "protocols", "report")


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'skcfx' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
