"""skcfx: counterfactual explanations for image classifiers, as scikit-learn estimators.

Main estimators
---------------
DiffAEEncoder
    Diffusion autoencoder (semantic encoder + conditional DDIM decoder).
ModalDirectionFinder
    Modes of each class in latent space and a direction towards each (DifCluE).
CounterfactualExplainer
    Counterfactual explanations with DifCluE, DiME or FastDiME.
"""

__version__ = "0.1.0"

from .encoder import DiffAEEncoder  # noqa: E402
from .explanation import CounterfactualExplanation  # noqa: E402

__all__ = ["DiffAEEncoder", "CounterfactualExplanation", "__version__"]

try:  # modules written in parallel; re-exported once present
    from .modes import ModalDirectionFinder  # noqa: E402

    __all__.append("ModalDirectionFinder")
    from .explainer import CounterfactualExplainer  # noqa: E402

    __all__.append("CounterfactualExplainer")
except ImportError:  # pragma: no cover
    pass
