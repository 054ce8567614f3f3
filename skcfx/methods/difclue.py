"""DifCluE: one counterfactual per mode of the target class, by walking the semantic latent.

For a query ``x`` with semantic latent ``z`` and inverted noise ``x_T``, the counterfactual for
mode ``k`` (unit direction ``w_k`` in the standardised latent space) is::

    z' = mean + std * ((z - mean) / std + alpha * sqrt(d) * w_k)
    x' = DDIM-decode(x_T, z')

which is the published Diffusion Autoencoders attribute edit with the DifCluE mode directions.
The paper fixes ``alpha`` for every query. skcfx by default chooses ``alpha`` per query and mode:

1. A cheap latent surrogate of the *explained classifier* (multinomial logistic regression on
   standardised latents, fitted on the classifier's own predictions) scans a grid of steps along
   ``w_k`` and proposes the smallest one at which the surrogate predicts the target class.
2. Steps around that proposal are decoded and checked with the real classifier, for at most
   ``max_decodes`` decodes: by default (``search='scan'``) a geometric ladder from half to twice
   the proposal, keeping the smallest accepted step (failing that the smallest flipping one,
   failing that the most probable one); with ``search='bracket'`` the step is grown (doubling)
   until it flips, then bisected down while it still flips. With an encoder that has a null
   latent, every decode is guided towards the edited latent in the middle of the chain
   (``guidance_scale``, ``guidance_interval``).
3. What no step got accepted is walked towards the mode instead (``fallback``): by default the
   latent goes to the mean of the query's nearest half of the mode's training latents, then to
   the mode's centre, each decode guided towards the edited latent (``retry_guidance``). Without
   guidance (an encoder with no null latent) the ladder is first extended by up to
   ``extend_decodes`` doublings and the fallback's decodes are unguided.

So the explained classifier's decision enters twice: through the surrogate's proposal and through
the verification, and the cost is bounded: with the defaults at most ``(max_decodes +
fallback_decodes) * 16`` denoiser calls per counterfactual (10 decode steps, 6 of them guided at
two calls each; see ``guidance_interval``), plus the query's inversion shared by its modes; each
optional stage (``extend_decodes``, ``unguided_rescue``, ``retry_search``) adds its own decodes.

Two refinements beyond the paper, both measured on digits (``benchmarks/difclue_digits.py``) and
both switchable off:

* ``require_mode=True``: a step is accepted only when the decoded counterfactual, re-encoded,
  is nearest to mode ``k``'s centre (one pass of the semantic encoder, no denoiser call). The
  classifier alone often flips on a half-way image that shows no mode in particular.
* ``contrast='source'``: the direction towards mode ``k`` separates the mode from the query's own
  cluster of the other classes (K-means with ``n_source_modes`` clusters) instead of from all of
  them (``contrast='rest'``, the paper). When the other classes are themselves many things (eight
  digits), one direction cannot remove what makes a "4" a "4" and a "9" a "9" at once.

Three choices for validity and realism, each measured side by side with the default before it
(``benchmarks/difclue_digits.py``, 10 digit pairs, 30 queries each, and where said others):

* ``search='scan'`` (the default since it was measured): the classifier's response along a
  direction is often a window (it flips, then flips back once the decode leaves the data), which
  the doubling search (``'bracket'``, the earlier default) walks past. The scan decodes a ladder
  of steps around the proposal and, when none is accepted, keeps the most probable one rather
  than the largest. Mean over the 10 pairs, scan vs bracket: percent conversion 0.83 vs 0.67,
  flip rate 0.85 vs 0.72, flips an independent classifier agrees with 0.95 vs 0.89; on the
  benchmark pair 0/6 the flip rate drops from 0.98 to 0.945 while conversion rises 0.85 -> 0.92.

* ``fallback='centre'`` (the default from then until ``'local'``, below): what the search could not get
  accepted (4 decodes along the direction) is walked from the query's latent towards the mode's
  mean latent instead, ``z + t (c_k - z)`` for ``t = 1/2, 1``, with the query's own noise, for two
  more decodes of the failures only. Mean over the same 10 pairs, with vs without: percent
  conversion 0.955 vs 0.83, flip rate 0.965 vs 0.85 (worst pair 0.87 vs 0.62), independent
  validity 0.97 vs 0.95, off-data 0.99 vs 1.05, at 54 vs 50 denoiser calls; on the benchmark pairs
  (resnet18, 100 queries) 1/7 converts 0.985 at flip 0.985 (0.895 / 0.925 without), 0/6 0.98 at
  0.99 (0.92 / 0.945). The price is edit specificity: a mode's counterfactuals spread 0.53 of the
  queries' spread instead of 0.64 (the fallback's decodes are closer to the mode's template).
  ``'nearest'`` (towards the mode's training latent nearest to the query) keeps more of the query
  but rescues few: 0.85 conversion, 0.87 flip.

* ``extend_decodes=3`` (the default since it was measured; with a guided retry it now runs only with
  ``unguided_rescue=True``): the surrogate's proposal can fall far
  short (on shapes the ladder's top, twice the proposal, flips only 0.54 of counterfactuals), so
  what no rung got accepted keeps doubling past the ladder, up to 3 more decodes, before the
  fallback. Shapes (``shapes_protocol.py --cpu``): flip rate 0.79 vs 0.56, percent conversion
  0.75 vs 0.56, FID 110 vs 112, at 74 vs 64 denoiser calls (``shapes_difclue_variants.py``, another
  training of the classifier: 0.86 vs 0.59, 0.875 vs 0.69). The same 10 digit pairs: conversion 0.952 vs 0.955,
  flip 0.967 vs 0.965 (the fallback already rescued those; all 45 pairs: 0.94 / 0.98 both);
  benchmark pairs 1/7 and 0/6 (resnet18, 100 queries) flip 0.99 / 0.995 vs 0.985 / 0.99 at the
  same conversion.

* ``retry_guidance='auto'`` (the default since it was measured; see the next point for how it runs
  now): what neither the search nor the fallback got accepted was searched and walked again with classifier-free guidance on the edited
  latent (scale 2). Where a DiffAE's latent decides little of what a decode shows, the query's
  inverted noise overrules the edit; guidance makes the decode follow the latent. Fashion-MNIST
  (``benchmarks/fashion_protocol.py``, 20000-step DiffAE, 2 pairs, 30 queries each): percent
  conversion 0.98 / 0.98 vs 0.95 / 0.73, flip rate 1.00 / 1.00 vs 0.98 / 0.77, at 95 / 140 vs 64 /
  70 denoiser calls (10000-step DiffAE: 0.97 / 0.83 vs 0.68 / 0.67). All 45 digit pairs:
  0.960 vs 0.959, flip 0.997 vs 0.996 at 37.1 vs 36.2 calls; shapes: unchanged (conversion 0.992,
  FID 66) for 0.6 more calls. Guiding every decode instead (``guidance_scale=2``) converts as
  well on Fashion-MNIST but costs realism where the latent already rules (shapes FID 83.5 vs
  66.1) and 1.8x the calls on digits.

* ``max_decodes=3``, ``unguided_rescue=False``, ``retry_search=False``, ``fallback='local'`` (the
  defaults since they were measured): what a 3-rung ladder could not get accepted goes straight to
  the guided fallback, whose first decode walks to the mean of the query's nearest half of the
  mode's training latents and whose second to the mode's centre. The retry above spent most of its
  calls on an unguided rescue that rarely worked where guidance was needed (Fashion-MNIST's harder
  pair: its unguided fallback rescued 2 of 37) and on a guided re-search. Fashion-MNIST (same
  protocol; row ``difclue_previous``): conversion 0.97 / 1.00 vs 0.98 / 0.98, flip 1.00 / 0.98 vs
  1.00 / 1.00, FID 34.9 / 41.2 vs 33.7 / 42.7, at 55 / 57 vs 95 / 140 denoiser calls (DiME: 891 /
  659), spread ratio 0.47 / 0.54 vs 0.50 / 0.63. The centre fallback instead of the local one: the
  same conversion at spread 0.38 / 0.51 (scratch run). All 45 digit pairs: 0.965 vs 0.960, flip
  0.997 both, 33.1 vs 37.1 calls; shapes: conversion 0.992 both, FID 64.8 vs 66.0, 32.8 vs 35.9
  calls.

* ``guidance_scale='auto'``, ``guidance_interval=(0.1, 0.6)`` (the defaults since they were
  measured): every decode, the ladder's too, is guided on the edited latent (scale 2, with an
  encoder that has a null latent), but only in the steps whose timestep lies in ``[0.1 T, 0.6
  T]`` (6 of 10 steps). Before, the ladder decoded unguided and the fallback guided every step;
  most of Fashion-MNIST's counterfactuals then came from the guided fallback and were templates
  of their mode. Guidance left out of the noisiest steps, where the query's inverted noise fixes
  the layout, keeps the query; guidance there (the noisiest half of the steps) lost conversion on
  sandals (0.80) and realism. Fashion-MNIST (``fashion_protocol.py``, row
  ``difclue_unguided_search``): spread ratio 0.57 / 0.64 vs 0.47 / 0.54, conversion 0.98 / 1.00
  vs 0.97 / 1.00, flip 1.00 / 1.00 vs 1.00 / 0.98, FID 29 / 42 vs 35 / 41, at 59 / 63 vs 55 / 57
  denoiser calls (DiME: 891 / 659). All 45 digit pairs: spread 0.640 vs 0.547, conversion 0.964
  vs 0.965, flip 0.996 vs 0.997, independent validity 0.978 vs 0.972, at 43.9 vs 33.1 calls.
  Shapes, where the latent already rules: the same spread (0.69), flip 1.00 both, conversion
  0.98 vs 0.99, FID 71.4 vs 64.8 (DiME 77.9), 47 vs 33 calls (the interval ``(0.2, 0.6)``
  flipped only 0.97 there). The price is realism where the latent rules less: on the 10000-step
  Fashion-MNIST DiffAE the harder pair's FID is 159 vs 86 (flip 0.88 vs 0.83).

* ``mode_bound=q`` (off by default: with the scan it lowered the flip rate on both benchmark
  pairs): the edit may not push any standardised latent coordinate beyond the ``[q, 1 - q]`` quantiles of the target mode's training latents (a per-dimension box), unless the
  query itself already lies beyond it there (then that coordinate may not move further out).
  However far the search walks, and whatever it returns when no step is accepted, the edited
  latent stays within the range the mode occupies.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions

from ..diffusion.sampling import NFECounter, guidance_bounds
from .base import CounterfactualMethod, MethodOutput, layout_slots, register_method

__all__ = ["DifCluE", "AUTO_GUIDANCE_SCALE", "MAX_MODE_POINTS"]

#: The latent guidance scale of ``DifCluE(retry_guidance='auto')`` on an encoder with a null latent.
AUTO_GUIDANCE_SCALE = 2.0

#: Most training latents per mode kept for ``fallback='local'`` / ``'nearest'`` (``mode_points_``).
MAX_MODE_POINTS = 4096


@register_method
class DifCluE(CounterfactualMethod):
    """Mode-wise latent counterfactuals (DifCluE) with a per-query step search.

    Parameters
    ----------
    alpha : 'auto' or float, default='auto'
        ``'auto'`` searches the smallest accepted step per query and mode (see module docstring
        and ``require_mode``); a float uses that fixed step for every query, as in the paper (the
        published attribute editing uses about 0.3, up to 0.5).
    max_decodes : int, default=3
        Rungs of the ``'auto'`` search's ladder (``search='scan'``; the bracket's decodes): 3
        rungs, ``0.5, 1, 2`` times the surrogate's proposal (4 before; see ``unguided_rescue``).
    alpha_max : float, default=8.0
        Largest step the search may take.
    grid_size : int, default=64
        Points of the surrogate's scan over ``(0, alpha_max]``.
    margin : float, default=1.5
        Safety factor applied to the surrogate's proposal: the surrogate is a linear model of
        the classifier in latent space and tends to propose steps that fall short.
    overshoot : float >= 1, default=1.0
        After the search, decode once more at ``overshoot`` times the step found, keeping it unless
        it loses what the step had (acceptance, or the classifier's flip): walks further into the
        mode for one extra decode. 1 disables it.
    target_confidence : float in [0.5, 1), default=0.9
        The search accepts a step once the classifier predicts the target with at least this
        probability. 0.5 (any flip) gives the smallest edits; larger values walk further into the
        mode.
    guidance_scale : float >= 0 or 'auto', default='auto'
        Classifier-free guidance of every decode on the edited latent against the encoder's null
        latent (``eps_z + s * (eps_z - eps_null)``) in the steps of ``guidance_interval``: the
        decode follows the edited latent more and the query's inverted noise less. Each guided
        step costs two denoiser calls instead of one. ``'auto'``: ``AUTO_GUIDANCE_SCALE`` (2.0)
        when the encoder has a null latent (``DiffAEEncoder``'s default ``latent_dropout=0.1``),
        else 0 (a published checkpoint trained without latent dropout); an explicit value > 0
        needs the null latent.
    guidance_interval : (float, float) or float in (0, 1], default=(0.1, 0.6)
        Which steps of a guided decode (``guidance_scale`` or ``retry_guidance``) are guided. A
        pair ``(low, high)``: the steps whose timestep ``t`` has ``low <= t / T <= high`` (with
        10 decode steps, ``(0.1, 0.6)`` guides 6 of them: neither the 3 noisiest nor the last).
        A float: that share of the steps, the noisiest first (1: all). Guidance at the noisiest
        steps, where the decode's layout is fixed, makes counterfactuals templates of their mode
        (Kynkaenniemi et al., NeurIPS 2024 saw the same loss of diversity in generation); see the
        module docstring for the figures.
    retry_guidance : float >= 0 or 'auto', default='auto'
        ``alpha='auto'`` only: the counterfactuals the ladder could not get accepted are walked by
        the ``fallback`` with every decode guided at this scale (by default straight away, see
        ``unguided_rescue``; ``retry_search=True`` searches the ladder again, guided, first).
        It helps where the inverted noise overrules the latent (a DiffAE whose latent decides
        little of what a decode shows). Its steps are those of ``guidance_interval``.
        ``'auto'``: ``AUTO_GUIDANCE_SCALE`` (2.0) when the encoder has a null latent
        (``DiffAEEncoder``'s default ``latent_dropout=0.1``), else 0 (off; e.g. a published
        checkpoint trained without latent dropout: then the unguided extension and fallback run).
    retry_search : bool or 'last', default=False
        Whether the guided retry runs the step search (ladder and extension) again: ``True``
        before its guided fallback, ``'last'`` after it, for what even the fallback could not
        get accepted, ``False`` never. On Fashion-MNIST (``benchmarks/fashion_protocol.py``)
        ``True`` kept more of the query (spread ratio 0.50 / 0.63 vs 0.45 / 0.54, with the
        unguided rescue and the centre fallback) at 95 / 140 instead of 76 / 93 denoiser calls.
        ``'last'`` helps a DiffAE whose latent rules less: on the 10000-step Fashion-MNIST
        DiffAE the harder pair flips 0.95 instead of 0.83 (conversion 0.87 vs 0.83) at 96 vs 62
        calls, but its flips there are less real (FID 162 vs 86); on the 20000-step one it
        changes little (flip 1.00 / 1.00 vs 1.00 / 0.98) for 56 / 64 vs 55 / 57 calls.
    unguided_rescue : bool, default=False
        Whether what the ladder could not get accepted is first rescued unguided (the
        ``extend_decodes`` extension, then the ``fallback``) when a guided retry follows
        (``retry_guidance`` > 0). False: straight to the guided fallback, which costs two calls
        per step but lands where the unguided decodes kept failing (on Fashion-MNIST's harder
        pair the unguided fallback rescued 2 of 37). Without a guided retry the unguided rescue
        always runs.
    decode_steps : int, default=10
        DDIM decoding steps of each decode (``None``: the encoder's ``decode_steps``). 10 steps
        keep a 16 px digit's reconstruction error at 0.019 ([-1, 1] units; 0.005 with 20) and
        halve the cost of the search.
    require_mode : bool, default=True
        Accept a step only when the re-encoded counterfactual's nearest mode (the direction
        finder's ``predict``) is the mode being explained, besides the classifier's decision.
    contrast : {'source', 'rest'}, default='source'
        What the direction towards a mode is learnt against: ``'rest'`` all latents of the other
        classes (the paper; the finder's ``directions_standardized_``), ``'source'`` the cluster
        of the other classes nearest to the query (one logistic regression per cluster and mode,
        same ``C`` as the finder).
    n_source_modes : int, default=16
        Clusters of the other classes for ``contrast='source'``, capped so that a cluster holds
        10 latents on average.
    mode_bound : float in [0, 0.5) or None, default=None
        Bound every edit by the target mode's latent distribution: each standardised coordinate
        of the edited latent is clipped to the ``[mode_bound, 1 - mode_bound]`` quantiles of the
        mode's training latents (membership by the finder's ``predict``), widened to include the
        query's own value (an edit never pulls a coordinate *in* that it did not push *out*).
        0 is the mode's min-max box. None: unbounded (the published edit).
    search : {'bracket', 'scan'}, default='scan'
        How ``alpha='auto'`` spends its ``max_decodes`` decodes. ``'bracket'``: from the
        surrogate's proposal, double until accepted, then bisect (assumes the classifier, once
        flipped, stays flipped further along). ``'scan'``: decode a geometric ladder of steps
        from half to twice the proposal, smallest first, and keep the smallest accepted one (a
        pair stops at its first accepted rung; each rung is one batched decode); failing that
        the smallest that flips; failing that the step with the highest target probability (not
        the largest: far along a direction the decode leaves the data and the classifier often
        flips back).
    fallback : {'local', 'centre', 'nearest'} or None, default='local'
        What to do for the counterfactuals the step search (``alpha='auto'``) could not get
        accepted: walk the latent from the query's towards a point that lies in mode ``k``
        instead of along the direction: ``'nearest'`` the mode's training latent nearest to the
        query (standardised), ``'centre'`` the mode's mean latent; for both,
        ``fallback_decodes`` interpolations ``z + t (target - z)``, ``t = 1/n, ..., 1``, are
        decoded. ``'local'``: each of the ``fallback_decodes`` decodes goes all the way to the
        mean of the mode's training latents nearest to the query, a share of them growing from
        ``fallback_share`` to all (the centre, last): a target that keeps what the query shares
        with its neighbours in the mode before the mode's template. Each decode uses the query's
        own noise, as always; the first accepted one replaces the search's result; failing
        that, one that flips replaces a result that did not. Costs decodes only for the failures. The
        reported ``alpha`` of such a counterfactual is its edit's length in step units
        (``|zs' - zs| / sqrt(d)``). None: off (the search's result is kept, as in the paper).
    fallback_decodes : int, default=2
        Decodes of the fallback per failed counterfactual.
    fallback_share : float in (0, 1], default=0.5
        ``fallback='local'`` only: share of the mode's training latents (nearest to the query)
        whose mean the first fallback decode walks to; later decodes take geometrically more, the
        last all of them.
    extend_decodes : int, default=3
        ``search='scan'`` only: decodes allowed past the ladder for the counterfactuals no rung got
        accepted; their step keeps doubling from the top rung (up to ``alpha_max``), before any
        ``fallback``. Costs decodes only for those. A decode past the ladder replaces the
        ladder's result only when it flips or is accepted (a more probable decode that still
        does not flip is just further off the data). 0: the ladder alone.
    edit_depth : float in (0, 1], default=1.0
        Share of the ``decode_steps`` chain the edit goes through. 1: the published edit (the
        query inverted to ``x_T``, decoded with the edited latent). Below 1 the query is inverted
        only to step ``round(edit_depth * decode_steps)`` of the decode chain and decoded from
        there with the edited latent (as DiME starts from a partly noised query): the query's
        coarse layout, already fixed at that noise level, is kept, and the latent edit changes
        less. Costs that many inversion steps instead of the encoder's ``encode_steps``, and as
        many plus one per decode.

    Attributes
    ----------
    surrogate_ : LogisticRegression or None
        Latent surrogate of the explained classifier (None when it predicts one class only).
    source_centers_ : dict
        ``contrast='source'``: mode id -> (n_clusters, latent_dim) standardised centres of the
        other classes' clusters.
    source_directions_ : dict
        ``contrast='source'``: mode id -> (n_clusters, latent_dim) unit directions, standardised.
    mode_box_ : dict
        ``mode_bound`` set: mode id -> (low, high) arrays of shape (latent_dim,), the box in
        standardised units. Empty otherwise.
    mode_points_ : dict
        ``fallback`` set: mode id -> (n_m, latent_dim) float32 standardised latents the fallback
        walks towards (the mode's training latents for ``'nearest'`` and ``'local'``, at most
        ``MAX_MODE_POINTS`` of them, evenly spaced through the training order; its mean for
        ``'centre'``). Empty otherwise.
    """

    name = "difclue"
    needs_directions = True

    _parameter_constraints = {
        "alpha": [StrOptions({"auto"}), Interval(numbers.Real, None, None, closed="neither")],
        "max_decodes": [Interval(numbers.Integral, 1, None, closed="left")],
        "alpha_max": [Interval(numbers.Real, 0, None, closed="neither")],
        "grid_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "margin": [Interval(numbers.Real, 1, None, closed="left")],
        "overshoot": [Interval(numbers.Real, 1, None, closed="left")],
        "target_confidence": [Interval(numbers.Real, 0.5, 1, closed="left")],
        "guidance_scale": [StrOptions({"auto"}), Interval(numbers.Real, 0, None, closed="left")],
        "retry_guidance": [StrOptions({"auto"}), Interval(numbers.Real, 0, None, closed="left")],
        "retry_search": ["boolean", StrOptions({"last"})],
        "unguided_rescue": ["boolean"],
        "guidance_interval": [Interval(numbers.Real, 0, 1, closed="right"), tuple, list],
        "decode_steps": [Interval(numbers.Integral, 1, 1000, closed="both"), None],
        "require_mode": ["boolean"],
        "contrast": [StrOptions({"source", "rest"})],
        "n_source_modes": [Interval(numbers.Integral, 1, None, closed="left")],
        "mode_bound": [Interval(numbers.Real, 0, 0.5, closed="left"), None],
        "search": [StrOptions({"bracket", "scan"})],
        "fallback": [StrOptions({"nearest", "centre", "local"}), None],
        "fallback_share": [Interval(numbers.Real, 0, 1, closed="right")],
        "fallback_decodes": [Interval(numbers.Integral, 1, None, closed="left")],
        "extend_decodes": [Interval(numbers.Integral, 0, None, closed="left")],
        "edit_depth": [Interval(numbers.Real, 0, 1, closed="right")],
    }

    def __init__(self, alpha="auto", *, max_decodes=3, alpha_max=8.0, grid_size=64, margin=1.5,
                 target_confidence=0.9, overshoot=1.0, guidance_scale="auto", guidance_interval=(0.1, 0.6),
                 retry_guidance="auto",
                 retry_search=False, unguided_rescue=False, decode_steps=10,
                 require_mode=True, contrast="source", n_source_modes=16, mode_bound=None,
                 search="scan", fallback="local", fallback_decodes=2, fallback_share=0.5, extend_decodes=3,
                 edit_depth=1.0):
        self.alpha = alpha
        self.max_decodes = max_decodes
        self.alpha_max = alpha_max
        self.grid_size = grid_size
        self.margin = margin
        self.target_confidence = target_confidence
        self.overshoot = overshoot
        self.guidance_scale = guidance_scale
        self.guidance_interval = guidance_interval
        self.retry_guidance = retry_guidance
        self.retry_search = retry_search
        self.unguided_rescue = unguided_rescue
        self.decode_steps = decode_steps
        self.require_mode = require_mode
        self.contrast = contrast
        self.n_source_modes = n_source_modes
        self.mode_bound = mode_bound
        self.search = search
        self.fallback = fallback
        self.fallback_decodes = fallback_decodes
        self.fallback_share = fallback_share
        self.extend_decodes = extend_decodes
        self.edit_depth = edit_depth

    def resolved_guidance_scale(self, model):
        """The search's guidance scale with ``model`` (``'auto'`` resolved, see ``guidance_scale``)."""
        return _resolve_guidance(self.guidance_scale, model)

    def resolved_retry_guidance(self, model):
        """The retry's guidance scale with ``model`` (``'auto'`` resolved, see ``retry_guidance``)."""
        return _resolve_guidance(self.retry_guidance, model)

    def _guidance_steps(self, n_steps):
        """``model.decode`` keywords that restrict guidance to ``guidance_interval`` (see there)."""
        interval = self.guidance_interval
        if isinstance(interval, (tuple, list)):
            guidance_bounds(interval, 1000)  # a clear error for a malformed pair, before any decode
            return {"guidance_interval": tuple(float(v) for v in interval)}
        return {"guidance_steps": max(1, int(np.ceil(interval * n_steps - 1e-9)))}

    @property
    def needs_unconditional(self):
        """Guidance needs the encoder's null latent (the explainer checks it before fitting)."""
        explicit = [v for v in (self.guidance_scale, self.retry_guidance) if isinstance(v, numbers.Real)]
        return any(v > 0 for v in explicit)

    # ------------------------------------------------------------------ fitting
    def fit(self, context, Z, y_classifier):
        """Fit the latent surrogate of the explained classifier (and, with ``contrast='source'``,
        the clusters of the other classes and one direction per cluster and mode).

        Parameters
        ----------
        Z : ndarray of shape (n, latent_dim)
            Training latents.
        y_classifier : ndarray of shape (n,)
            The explained classifier's predicted class *indices* on the training images.
        """
        self._validate_params()
        self._guidance_steps(1)  # a malformed guidance_interval pair fails here, not at explain time
        finder = context.direction_finder
        Zs = (Z - finder.mean_) / finder.scale_
        classes = np.unique(y_classifier)
        if classes.size < 2:
            # The classifier predicts one class everywhere: the surrogate cannot propose steps.
            self.surrogate_ = None
        else:
            self.surrogate_ = LogisticRegression(C=1.0, max_iter=2000).fit(Zs, y_classifier)
        self.source_centers_, self.source_directions_ = {}, {}
        if self.contrast == "source":
            self._fit_source_directions(finder, Z, Zs)
        self.mode_box_ = {}
        if self.mode_bound is not None:
            mode_of = finder.predict(Z)
            for m in range(len(finder.mode_class_)):
                members = Zs[mode_of == m]
                if len(members) == 0:  # an empty mode: no bound
                    members = np.array([[-np.inf], [np.inf]]) * np.ones((1, Zs.shape[1]))
                self.mode_box_[m] = (np.quantile(members, self.mode_bound, axis=0),
                                     np.quantile(members, 1.0 - self.mode_bound, axis=0))
        self.mode_points_ = {}
        if self.fallback is not None:
            mode_of = finder.predict(Z)
            for m in range(len(finder.mode_class_)):
                members = Zs[mode_of == m]
                if len(members) == 0:  # no training latent is nearest to this mode: its centre
                    members = ((finder.cluster_centers_[m] - finder.mean_) / finder.scale_)[None]
                if self.fallback == "centre":
                    members = members.mean(axis=0, keepdims=True)
                elif len(members) > MAX_MODE_POINTS:
                    # 'nearest' / 'local' keep the members, evenly spaced through the training
                    # order beyond MAX_MODE_POINTS: the fitted method stays small (it is pickled
                    # with the explainer) and the neighbour means barely move.
                    members = members[np.linspace(0, len(members) - 1, MAX_MODE_POINTS).round().astype(int)]
                self.mode_points_[m] = members.astype(np.float32)
        return self

    def _fit_source_directions(self, finder, Z, Zs):
        """One direction per (mode, cluster of the other classes): see ``contrast``.

        Membership comes from the finder's ``predict`` (nearest mode) so that any fitted finder
        works, including one fitted on other latents.
        """
        mode_of = finder.predict(Z)
        class_of = finder.mode_class_[mode_of]
        clusterings = {}  # the other classes of a class are the same for all its modes
        for m in range(len(finder.mode_class_)):
            in_mode = mode_of == m
            others = Zs[class_of != finder.mode_class_[m]]
            n_clusters = min(self.n_source_modes, max(len(others) // 10, 1), len(np.unique(others, axis=0)))
            if not in_mode.any() or n_clusters < 1:
                # Nothing to contrast with: fall back to the paper's direction.
                self.source_centers_[m] = np.zeros((1, Zs.shape[1]))
                self.source_directions_[m] = finder.directions_standardized_[m][None]
                continue
            key = finder.mode_class_[m]
            if key not in clusterings:
                clusterings[key] = KMeans(n_clusters, n_init=4, random_state=0).fit(others)
            km = clusterings[key]
            directions = []
            for j in range(n_clusters):
                X = np.concatenate([Zs[in_mode], others[km.labels_ == j]])
                target = np.r_[np.ones(in_mode.sum()), np.zeros(np.sum(km.labels_ == j))]
                clf = LogisticRegression(C=finder.C, class_weight="balanced", max_iter=1000).fit(X, target)
                directions.append(clf.coef_[0] / max(np.linalg.norm(clf.coef_[0]), 1e-12))
            self.source_centers_[m] = km.cluster_centers_
            self.source_directions_[m] = np.asarray(directions)

    # ------------------------------------------------------------------ helpers
    def _slots(self, finder, targets, class_of_index):
        """List (query, target index, direction) triples for every mode of every target."""
        triples = []
        for i, row in enumerate(targets):
            for t in row:
                if t < 0:
                    continue
                for m in finder.modes_for_class(class_of_index[t]):
                    triples.append((i, int(t), int(m)))
        return triples

    def _directions(self, finder, zs, direction_ids):
        """Unit standardised direction of every (standardised latent, mode) pair, shape (m, d)."""
        if self.contrast == "rest":
            return finder.directions_standardized_[direction_ids]
        out = np.empty_like(zs)
        for m in np.unique(direction_ids):
            rows = np.flatnonzero(direction_ids == m)
            centers = self.source_centers_[m]
            nearest = np.argmin(((zs[rows, None, :] - centers[None]) ** 2).sum(-1), axis=1)
            out[rows] = self.source_directions_[m][nearest]
        return out

    def _bound(self, zs, stepped, mode_ids):
        """Clip stepped standardised latents ``(m, [g,] d)`` into their modes' boxes (widened to the
        query ``zs`` of shape ``(m, d)``); unchanged without ``mode_bound``."""
        if self.mode_bound is None:
            return stepped
        lo = np.stack([self.mode_box_[int(m)][0] for m in mode_ids])
        hi = np.stack([self.mode_box_[int(m)][1] for m in mode_ids])
        lo, hi = np.minimum(lo, zs), np.maximum(hi, zs)
        if stepped.ndim == 3:
            lo, hi = lo[:, None, :], hi[:, None, :]
        return np.clip(stepped, lo, hi)

    def _edit(self, finder, z, w, alphas, mode_ids=None):
        """Raw latents after stepping ``alphas`` along the standardised unit directions ``w``
        (bounded by the modes ``mode_ids`` with ``mode_bound``)."""
        d = z.shape[1]
        if self.mode_bound is not None and mode_ids is not None:
            zs = (z.detach().cpu().numpy().astype(np.float64) - finder.mean_) / finder.scale_
            stepped = self._bound(zs, zs + np.asarray(alphas, dtype=np.float64)[:, None] * np.sqrt(d) * w,
                                  mode_ids)
            return torch.as_tensor(finder.mean_ + finder.scale_ * stepped, dtype=z.dtype, device=z.device)
        w = torch.as_tensor(w, dtype=z.dtype, device=z.device)
        mean = torch.as_tensor(finder.mean_, dtype=z.dtype, device=z.device)
        scale = torch.as_tensor(finder.scale_, dtype=z.dtype, device=z.device)
        a = torch.as_tensor(alphas, dtype=z.dtype, device=z.device)[:, None]
        zs = (z - mean) / scale + a * np.sqrt(d) * w
        return mean + scale * zs

    def _propose(self, zs, w, target, mode_ids=None):
        """Surrogate proposal: smallest grid step at which the surrogate predicts ``target``."""
        if self.surrogate_ is None:
            return np.full(len(w), 0.5 * self.alpha_max)
        d = zs.shape[1]
        grid = np.linspace(self.alpha_max / self.grid_size, self.alpha_max, self.grid_size)
        points = zs[:, None, :] + grid[None, :, None] * np.sqrt(d) * w[:, None, :]
        if mode_ids is not None:
            points = self._bound(zs, points, mode_ids)
        pred = self.surrogate_.predict(points.reshape(-1, d)).reshape(len(zs), len(grid))
        hits = pred == np.asarray(target)[:, None]
        first = np.where(hits.any(axis=1), hits.argmax(axis=1), len(grid) - 1)
        return np.minimum(grid[first] * self.margin, self.alpha_max)

    # ------------------------------------------------------------------ generation
    def generate(self, context, x_0, targets):
        """Counterfactuals for a batch (see :class:`~skcfx.methods.base.CounterfactualMethod`)."""
        model, finder, proba = context.model, context.direction_finder, context.proba_model
        class_of_index = context.class_of_index
        decode_steps = self.decode_steps or context.decode_steps
        counter = NFECounter()  # the encoder passes are not denoiser calls: only samplers count
        z = model.encode(x_0)
        # edit_depth < 1: invert the query only part of the way down the decode chain and decode
        # from there, so the low-noise part of the query's own trajectory is kept.
        start_index = int(round(self.edit_depth * decode_steps))
        if start_index >= decode_steps:
            start_index = None
            x_T = model.invert(x_0, z, context.encode_steps, counter=counter)
        else:
            start_index = max(start_index, 1)
            x_T = model.invert(x_0, z, decode_steps, counter=counter, stop_index=start_index)

        guided_steps = self._guidance_steps(decode_steps)
        triples = self._slots(finder, targets, class_of_index)
        q = np.array([t[0] for t in triples], dtype=np.int64)
        tgt = np.array([t[1] for t in triples], dtype=np.int64)
        dirs = np.array([t[2] for t in triples], dtype=np.int64)
        zq, xq = z[q], x_T[q]
        # Standardised query latents (numpy), shared by the direction choice and the proposal.
        zs = (zq.cpu().numpy().astype(np.float64) - finder.mean_) / finder.scale_
        w = self._directions(finder, zs, dirs)

        guided_decodes = np.zeros(len(tgt))  # decodes with latent guidance (two calls per guided step)

        def decoder(guidance_scale):
            def decode(alphas, idx=None, directions=None):
                # Decode the pairs ``idx`` at their steps (counted) along their mode directions (or
                # along ``directions``, one per pair of ``idx``: the fallback); returns images and
                # rank. rank 2: accepted; 1: the classifier predicts the target but the step is not
                # accepted (confidence or mode check); 0: the classifier does not flip.
                idx = np.arange(len(tgt)) if idx is None else idx
                if guidance_scale > 0:
                    guided_decodes[idx] += 1
                step_dirs = w[idx] if directions is None else directions
                edited = self._edit(finder, zq[idx], step_dirs, alphas[idx], dirs[idx])
                images = model.decode(edited, xq[idx], decode_steps, guidance_scale=guidance_scale,
                                      counter=counter, start_index=start_index, **guided_steps)
                p = proba.torch_proba(images).detach().cpu().numpy()
                p_target = p[np.arange(len(idx)), tgt[idx]]
                flipped = p.argmax(axis=1) == tgt[idx]
                accepted = flipped & (p_target >= self.target_confidence)
                if self.require_mode:
                    # The encoder pass is not a denoiser call, so it does not count towards the NFE.
                    z_cf = model.encode(images)
                    accepted &= finder.predict(z_cf.detach().cpu().numpy().astype(np.float64)) == dirs[idx]
                self._last_p_target = p_target  # read by the scan search (its fallback)
                return images, flipped.astype(np.int8) + accepted

            return decode

        decode = decoder(self.resolved_guidance_scale(model))

        retry_scale = self.resolved_retry_guidance(model)
        # With a guided retry to follow, unguided_rescue=False sends what the ladder could not get
        # accepted straight to it (no unguided extension, no unguided fallback).
        rescue = self.unguided_rescue or retry_scale == 0
        if self.alpha != "auto":
            alphas = np.full(len(triples), float(self.alpha))
            best, rank = decode(alphas)
            n_decodes = np.ones(len(triples))
        else:
            search = self._scan if self.search == "scan" else self._search
            best, alphas, rank, n_decodes = search(zs, w, tgt, decode, dirs, extend=rescue)
            if self.overshoot > 1 and len(alphas):
                further = np.minimum(alphas * self.overshoot, self.alpha_max)
                images, further_rank = decode(further)
                n_decodes += 1
                keep_np = further_rank >= rank  # walk further unless it loses acceptance or the flip
                keep = torch.as_tensor(keep_np, device=images.device)
                best = torch.where(keep[:, None, None, None], images, best)
                alphas = np.where(keep_np, further, alphas)
                rank = np.where(keep_np, further_rank, rank)

        fallback_used = np.zeros(len(triples), dtype=bool)
        if self.alpha == "auto" and self.fallback is not None and len(triples) and rescue:
            best, alphas, rank, fallback_used = self._fallback(zs, dirs, decode, best, alphas, rank, n_decodes)

        # What neither the search nor the fallback got accepted: both again, with guided decodes.
        retried = np.zeros(len(triples), dtype=bool)
        if self.alpha == "auto" and retry_scale > 0 and len(triples):
            guided = decoder(retry_scale)
            # 'last' is a string, so test it first: True / np.True_ search before the fallback
            search_last = isinstance(self.retry_search, str)
            if self.retry_search and not search_last:
                best, alphas, rank, retried = self._retry(search, zs, w, tgt, dirs, guided, best, alphas, rank,
                                                          n_decodes)
            else:
                retried = rank < 2
            if self.fallback is not None:
                best, alphas, rank, used = self._fallback(zs, dirs, guided, best, alphas, rank, n_decodes)
                fallback_used |= used
            if search_last:  # what even the guided fallback left: the guided search
                best, alphas, rank, _ = self._retry(search, zs, w, tgt, dirs, guided, best, alphas, rank, n_decodes)

        cfs, cf_target, out_alpha, mode_ids = layout_slots(x_0, q, best, tgt, alphas, dirs)
        info = {"mean_decodes": float(np.mean(n_decodes)) if len(n_decodes) else 0.0,
                "mean_guided_decodes": float(np.mean(guided_decodes)) if len(n_decodes) else 0.0,
                # share of counterfactuals whose step passed every check (confidence, mode)
                "accepted_rate": float(np.mean(rank == 2)) if len(rank) else 0.0,
                "retry_rate": float(np.mean(retried)) if len(rank) else 0.0,
                "fallback_rate": float(np.mean(fallback_used)) if len(rank) else 0.0}
        return MethodOutput(cfs, cf_target, out_alpha, mode_ids, float(counter.n_samples), info)

    def _retry(self, search, zs, w, tgt, dirs, decode, best, alphas, rank, n_decodes):
        """``search`` again, with ``decode`` (guided), for the pairs not accepted (see ``retry_guidance``).

        Returns ``(best, alphas, rank, retried)``; a retry's result replaces the first search's
        only where its rank is higher. ``n_decodes`` is updated in place.
        """
        failed = np.flatnonzero(rank < 2)
        retried = np.zeros(len(rank), dtype=bool)
        if failed.size == 0:
            return best, alphas, rank, retried
        retried[failed] = True

        def decode_failed(alpha, idx):  # the search's indices are into ``failed``
            full = np.zeros(len(rank))
            full[failed[idx]] = alpha[idx]
            return decode(full, failed[idx])

        images, new_alpha, new_rank, new_decodes = search(zs[failed], w[failed], tgt[failed], decode_failed,
                                                          dirs[failed])
        n_decodes[failed] += new_decodes
        self._keep_better(best, alphas, rank, failed, images, new_alpha, new_rank)
        return best, alphas, rank, retried

    @staticmethod
    def _keep_better(best, alphas, rank, idx, images, new_alpha, new_rank):
        """Replace, in place, the results of the pairs ``idx`` whose new rank is higher.

        ``images``, ``new_alpha`` and ``new_rank`` are aligned with ``idx``; returns the mask of
        the replaced ones.
        """
        better = new_rank > rank[idx]
        rows = idx[better]
        best[torch.as_tensor(rows, device=best.device)] = images[torch.as_tensor(better, device=images.device)]
        alphas[rows] = new_alpha[better]
        rank[rows] = new_rank[better]
        return better

    def _fallback(self, zs, dirs, decode, best, alphas, rank, n_decodes):
        """Walk the failed counterfactuals' latents towards a point of their mode (see ``fallback``).

        Returns ``(best, alphas, rank, used)``; ``n_decodes`` is updated in place.
        """
        failed = np.flatnonzero(rank < 2)
        used = np.zeros(len(rank), dtype=bool)
        if failed.size == 0:
            return best, alphas, rank, used
        d = zs.shape[1]
        done = np.zeros(failed.size, dtype=bool)
        for targets, t in self._fallback_rungs(zs[failed], dirs[failed]):
            todo = np.flatnonzero(~done)
            if todo.size == 0:
                break
            # The fallback reuses ``decode`` (a step along a unit direction): the move's own
            # direction with a step of its length times t reaches z + t (target - z).
            move = targets[todo] - zs[failed[todo]]
            length = np.linalg.norm(move, axis=1)
            unit = move / np.maximum(length, 1e-12)[:, None]
            idx = failed[todo]
            step = np.zeros(len(rank))
            step[idx] = t * length / np.sqrt(d)
            images, new_rank = decode(step, idx, directions=unit)
            n_decodes[idx] += 1
            better = self._keep_better(best, alphas, rank, idx, images, step[idx], new_rank)
            used[idx[better]] = True
            done[todo[new_rank == 2]] = True
        return best, alphas, rank, used

    def _fallback_rungs(self, zs, dirs):
        """The fallback's ``(targets, t)`` per decode, ``targets`` of shape ``(len(zs), d)``.

        ``'nearest'`` / ``'centre'``: one target, ``t = 1/n, ..., 1``. ``'local'``: ``t = 1``
        and, per rung, the mean of the share ``s_i`` of the mode's training latents nearest to
        the query, ``s_i`` growing geometrically from ``fallback_share`` to 1 (the centre).
        """
        n = self.fallback_decodes
        if self.fallback == "local":
            shares = self.fallback_share ** (np.arange(n - 1, -1, -1) / max(n - 1, 1)) if n > 1 else np.ones(1)
        else:
            shares = np.zeros(1)  # one target: the nearest point of ``mode_points_``
        targets = np.empty((len(shares),) + zs.shape)
        for m in np.unique(dirs):
            rows = np.flatnonzero(dirs == m)
            points = self.mode_points_[int(m)].astype(np.float64)
            ks = [max(1, int(np.ceil(share * len(points)))) for share in shares]
            targets[:, rows] = _means_of_nearest(zs[rows], points, ks)
        if self.fallback == "local":
            return [(targets[i], 1.0) for i in range(len(shares))]
        return [(targets[0], t) for t in np.arange(1, n + 1) / n]

    def _scan(self, zs, w, tgt, decode, dirs=None, extend=True):
        """Geometric ladder ``proposal * 2 ** linspace(-1, 1, max_decodes)``, smallest rung first, then
        (``extend``) up to ``extend_decodes`` doublings for what no rung got accepted (see ``search``)."""
        m = len(w)
        proposal = self._propose(zs, w, tgt, dirs)
        factors = 2.0 ** np.linspace(-1.0, 1.0, self.max_decodes) if self.max_decodes > 1 else np.ones(1)
        best_images, best_alpha = None, proposal.copy()
        best_key = np.full((m, 2), -np.inf)  # (rank, tie-break), larger is better
        n_decodes = np.zeros(m)

        def keep(idx, alpha, tie_break=True):
            nonlocal best_images
            images, rank = decode(alpha, idx)
            n_decodes[idx] += 1
            p_target = self._last_p_target
            if best_images is None:
                best_images = images.clone()
            # accepted or flipped: the smallest step wins (steps only grow: keep the first);
            # neither: the highest target probability wins, on the ladder only (past it a more
            # probable decode that still does not flip is further off the data, not better).
            tie = np.where(rank > 0, 0.0, p_target)
            old = best_key[idx]
            replace = (rank > old[:, 0]) | ((rank == old[:, 0]) & (rank == 0) & (tie > old[:, 1]) & tie_break)
            rows = idx[replace]
            best_images[torch.as_tensor(rows, device=best_images.device)] = \
                images[torch.as_tensor(replace, device=images.device)]
            best_alpha[rows] = alpha[rows]
            best_key[rows, 0], best_key[rows, 1] = rank[replace], tie[replace]

        # Rungs in ascending order, each decoded only for the pairs no smaller rung got accepted:
        # the same result as decoding the whole ladder (the smallest accepted step wins), for
        # fewer decodes.
        for f in factors:
            idx = np.flatnonzero(best_key[:, 0] < 2)
            if idx.size == 0:
                break
            keep(idx, np.minimum(proposal * f, self.alpha_max))
        # The surrogate's proposal can fall far short (its linear model of the classifier
        # saturates): keep doubling past the ladder's top for what is still not accepted.
        step = np.minimum(proposal * factors[-1], self.alpha_max)
        for _ in range(self.extend_decodes if extend else 0):
            idx = np.flatnonzero((best_key[:, 0] < 2) & (step < self.alpha_max))
            if idx.size == 0:
                break
            step[idx] = np.minimum(2.0 * step[idx], self.alpha_max)
            keep(idx, step, tie_break=False)
        return best_images, best_alpha, best_key[:, 0].astype(np.int8), n_decodes

    def _search(self, zs, w, tgt, decode, dirs=None, extend=True):
        """Bracketing search for the smallest accepted step (at most ``max_decodes`` decodes).

        Keeps, per pair, ``lo`` (largest step known not accepted) and ``hi`` (smallest step known
        accepted): grow by doubling while ``hi`` is unknown, bisect once it is known, stop a pair
        when its bracket is within 10% or it cannot grow past ``alpha_max``. The image kept is
        the smallest accepted step; failing that the smallest step that flips the classifier;
        failing that the largest step tried. (``extend`` is the scan's; the bracket has no extension.)
        """
        m = len(w)
        alpha = self._propose(zs, w, tgt, dirs)
        lo, hi = np.zeros(m), np.full(m, np.inf)
        best_images, best_alpha, best_rank = None, alpha.copy(), np.full(m, -1, dtype=np.int8)
        n_decodes = np.zeros(m)
        active = np.ones(m, dtype=bool)
        for _ in range(self.max_decodes):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            images, rank = decode(alpha, idx)
            n_decodes[idx] += 1
            if best_images is None:
                best_images = images.new_zeros((m,) + tuple(images.shape[1:]))
            a, old_a, old_rank = alpha[idx], best_alpha[idx], best_rank[idx]
            replace = (rank > old_rank) | ((rank == old_rank) & np.where(rank > 0, a < old_a, a > old_a))
            best_images[idx[replace]] = images[torch.as_tensor(replace, device=images.device)]
            best_alpha[idx[replace]] = a[replace]
            best_rank[idx[replace]] = rank[replace]
            accepted = rank == 2
            hi[idx[accepted]] = alpha[idx[accepted]]
            lo[idx[~accepted]] = alpha[idx[~accepted]]
            known = np.isfinite(hi)
            alpha = np.where(known, 0.5 * (lo + hi), np.minimum(2.0 * alpha, self.alpha_max))
            converged = known & (hi - lo <= 0.1 * hi)
            stuck = ~known & (lo >= self.alpha_max)
            active = ~(converged | stuck)
        return best_images, best_alpha, best_rank, n_decodes


def _resolve_guidance(value, model):
    """A guidance scale: ``'auto'`` is ``AUTO_GUIDANCE_SCALE`` with a null latent, else 0."""
    if isinstance(value, str):  # 'auto' (validated)
        return AUTO_GUIDANCE_SCALE if getattr(model, "has_null_latent", False) else 0.0
    return float(value)


def _means_of_nearest(queries, points, ks, block_elements=1 << 22):
    """Per ``k`` of ``ks``, the mean of the ``k`` rows of ``points`` nearest to each query (Euclidean).

    Returns an array of shape ``(len(ks), len(queries), d)``. Distances come from ``|q|^2 - 2 q.p
    + |p|^2`` in blocks of queries (at most about ``block_elements`` distances at a time), once for
    all ``ks``; the ``k`` nearest are selected (``argpartition``) and averaged by a product with a
    ``1/k`` selection matrix of the block's size: a mode of 10^5 training latents costs memory for
    one block, not ``queries x points x d``. ``k >= len(points)`` is the plain mean.
    """
    out = np.empty((len(ks), len(queries), points.shape[1]))
    partial = [i for i, k in enumerate(ks) if k < len(points)]
    for i in set(range(len(ks))) - set(partial):
        out[i] = points.mean(axis=0)
    if not partial:
        return out
    sq_points = (points ** 2).sum(axis=1)
    step = max(1, block_elements // len(points))
    for start in range(0, len(queries), step):
        q = queries[start:start + step]
        d2 = (q ** 2).sum(axis=1)[:, None] - 2.0 * q @ points.T + sq_points[None]
        for i in partial:
            nearest = np.argpartition(d2, ks[i] - 1, axis=1)[:, :ks[i]]
            weights = np.zeros_like(d2)
            np.put_along_axis(weights, nearest, 1.0 / ks[i], axis=1)
            out[i, start:start + step] = weights @ points
    return out
