"""Evaluation metrics for counterfactual explanations, as plain functions.

Every metric takes numpy arrays and returns a float or a dict of floats
(the numeric metrics also accept torch tensors, moved to host memory;
:func:`extract_features` takes any image batch skcfx accepts). Inputs are
validated: wrong shapes, NaN/inf or out-of-range values raise ValueError or
TypeError naming the argument. Images follow skcfx's public convention,
float ``(n, H, W, C)`` in [0, 1], and ``k`` counterfactuals per query are
stacked on axis 1, as in ``CounterfactualExplanation.counterfactuals``.

==============================  ==========================================  =======================
Function                        Definition                                  Source
==============================  ==========================================  =======================
:func:`flip_rate`               share of counterfactuals the classifier     DiME (Jeanneret et al.,
                                assigns to the target class                 ACCV 2022)
:func:`percent_conversion`      per mode, share of counterfactuals in       DifCluE
                                which an oracle sees that mode's
                                attribute; and their mean
:func:`mode_recovery`           ARI and NMI between modes and known         DifCluE; Hubert &
                                sub-classes                                 Arabie (1985)
:func:`proximity`               mean per-element L1 (MAE) or L2 (RMSE)      Wachter et al. (2017);
                                between query and counterfactual            DiME
:func:`stability`               MAE / MSE between counterfactuals of x and  DISSECT (Ghandeharioun
                                of a slightly perturbed x                   et al., ICLR 2022)
:func:`frechet_distance`        norm(mu_a - mu_b)^2 + Tr(S_a + S_b - 2      FID: Heusel et al.
                                sqrtm(S_a S_b)) on precomputed features     (NeurIPS 2017)
:func:`extract_features`        batched features of a frozen torch module   helper for FID
                                (timm: pooled pre-logits) or any callable
:func:`realism`                 cross-validated accuracy of a               DISSECT
                                real-vs-generated classifier (0.5 =
                                indistinguishable)
:func:`mnac`                    mean number of oracle attributes (p > 0.5)  DiME; DiVE (Rodriguez
                                that differ between query and               et al., ICCV 2021)
                                counterfactual
:func:`correlation_difference`  sum_a abs(c_a - c^M_a): label correlations  DiME
                                with the query attribute in the data vs.
                                correlations of the oracle's changes
:func:`diversity`               sigma_L: mean pairwise distance between     DiME (LPIPS there)
                                the k counterfactuals of a query
                                (pluggable distance)
:func:`independent_validity`    among counterfactuals that flipped the      DiME's flip rate asked
                                explained classifier, the share an          of a second model
                                independent classifier (other               (Jeanneret et al.,
                                architecture, seed) assigns to the target   ACCV 2022)
:func:`edit_specificity`        per mode, spread of the counterfactuals     DifCluE issue: edits,
                                across queries over the spread of the       not templates
                                queries, and share nearer their query than
                                the mode's mean counterfactual
:func:`importance`              Pearson R, Spearman rho, mean Bernoulli KL  DISSECT
                                and MSE between intended and obtained
                                probabilities
:func:`distinctness`            accuracy, precision and recall (micro,      DISSECT
                                macro) of a classifier telling which
                                concept changed
:func:`substitutability`        score of a classifier trained on            DISSECT
                                counterfactuals and tested on real data,
                                and its ratio to the original classifier's
                                score
==============================  ==========================================  =======================

Examples
--------
>>> import numpy as np
>>> from skcfx import metrics
>>> metrics.flip_rate(np.array([1, 0, 1, 1]), target_class=1)
0.75
>>> metrics.mnac(np.array([[0.9, 0.2]]), np.array([[0.1, 0.2]]))
1.0
"""

from .attributes import correlation_difference, mnac
from .dissect import distinctness, importance, substitutability
from .diversity import diversity
from .edits import edit_specificity, independent_validity
from .modes import mode_recovery
from .proximity import proximity, stability
from .realism import extract_features, frechet_distance, realism
from .validity import flip_rate, percent_conversion

__all__ = [
    "correlation_difference",
    "distinctness",
    "diversity",
    "edit_specificity",
    "extract_features",
    "flip_rate",
    "frechet_distance",
    "importance",
    "independent_validity",
    "mnac",
    "mode_recovery",
    "percent_conversion",
    "proximity",
    "realism",
    "stability",
    "substitutability",
]
