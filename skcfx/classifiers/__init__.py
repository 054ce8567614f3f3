"""Image classifiers: :class:`TimmClassifier`, and adapters that put any classifier behind one interface.

Counterfactual methods explain a classifier through :func:`as_proba_model`, which wraps

* a fitted :class:`TimmClassifier`;
* a ``torch.nn.Module`` returning logits (any timm model), fed ``(n, C, H, W)`` images in [-1, 1]
  unless ``input_range`` says otherwise;
* a fitted scikit-learn classifier with ``predict_proba`` on *flattened* pixels: rows of
  ``images.reshape(n, H * W * C)`` with values in [0, 1] (channels last, so a grayscale image
  flattens exactly like ``sklearn.datasets.load_digits().images.reshape(n, -1)``);
* a plain callable mapping ``(n, H, W, C)`` float images in [0, 1] to probabilities ``(n, n_classes)``.

into a :class:`ProbaModel` with numpy ``predict_proba`` and torch ``torch_logits`` / ``torch_proba``.
Torch-backed models are *differentiable*: gradients of ``torch_logits`` flow back to the input, which
guided diffusion (DiME) needs. :func:`feature_extractor` gives the penultimate (pre-logits) features of
a timm network, used for Frechet distances and as a perceptual distance.

Convention: torch modules inside skcfx see images as ``(n, C, H, W)`` float32 tensors in [-1, 1]; a
:class:`TimmClassifier` normalises its inputs that way, so its ``module_`` can be used directly on
tensors made by :func:`skcfx._images.to_tensor`.
"""

from .adapters import FeatureExtractor, ProbaModel, as_proba_model, feature_extractor
from .timm import TimmClassifier

__all__ = ["TimmClassifier", "ProbaModel", "as_proba_model", "FeatureExtractor", "feature_extractor"]
