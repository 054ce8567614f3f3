"""skcfx: counterfactual explanations for image classifiers, as scikit-learn estimators."""

__version__ = "0.1.0"
