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
2. That proposal is decoded and checked with the real classifier; the step is then grown
   (doubling) until it flips or bisected down while it still flips, for at most ``max_decodes``
   decodes. The smallest flipping step found is kept (or the largest tried when none flips).

So the explained classifier's decision enters twice: through the surrogate's proposal and through
the verification, and the cost is bounded: at most ``max_decodes * decode_steps`` denoiser calls
per counterfactual, plus the query's inversion shared by its modes.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions

from .base import CounterfactualMethod, MethodOutput, layout_slots, register_method

__all__ = ["DifCluE"]


@register_method
class DifCluE(CounterfactualMethod):
    """Mode-wise latent counterfactuals (DifCluE) with a per-query step search.

    Parameters
    ----------
    alpha : 'auto' or float, default='auto'
        ``'auto'`` searches the smallest step that flips the classifier per query and mode (see
        module docstring); a float uses that fixed step for every query, as in the paper (the
        published attribute editing uses about 0.3, up to 0.5).
    max_decodes : int, default=4
        Decodes allowed per counterfactual in the ``'auto'`` search (the cost bound).
    alpha_max : float, default=8.0
        Largest step the search may take.
    grid_size : int, default=64
        Points of the surrogate's scan over ``(0, alpha_max]``.
    margin : float, default=1.5
        Safety factor applied to the surrogate's proposal. On digits (1/7 vs rest, 60 queries)
        ``alpha_max=8, margin=1.5`` flipped 0.96 of counterfactuals against 0.86 for
        ``alpha_max=4, margin=1.15``, at the same cost (50 NFE).
    overshoot : float >= 1, default=1.0
        After the search, decode once more at ``overshoot`` times the step found, keeping it when
        the classifier still predicts the target: walks further into the mode for one extra
        decode. 1 disables it.
    target_confidence : float in [0.5, 1), default=0.9
        The search accepts a step once the classifier predicts the target with at least this
        probability. 0.5 (any flip) gives the smallest edits; larger values walk further into the
        mode (digits 1/7 vs rest: an oracle read mode 1's counterfactuals as a 1 in 0.73 of
        queries at 0.5 and 0.80 at 0.9, same flip rate and NFE).
    guidance_scale : float >= 0, default=0.0
        Classifier-free guidance of every decode on the edited latent against the encoder's null
        latent (``eps_z + s * (eps_z - eps_null)``): the decode follows the edited latent more and
        the query's inverted noise less. Each decode then costs two denoiser calls per step. Needs
        an encoder trained with ``latent_dropout > 0``. 0 disables it.
    decode_steps : int, default=10
        DDIM decoding steps of each decode (``None``: the encoder's ``decode_steps``). 10 steps
        keep a 16 px digit's reconstruction error at 0.019 ([-1, 1] units; 0.005 with 20) and
        halve the cost of the search.
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
        "guidance_scale": [Interval(numbers.Real, 0, None, closed="left")],
        "decode_steps": [Interval(numbers.Integral, 1, 1000, closed="both"), None],
    }

    def __init__(self, alpha="auto", *, max_decodes=4, alpha_max=8.0, grid_size=64, margin=1.5,
                 target_confidence=0.9, overshoot=1.0, guidance_scale=0.0, decode_steps=10):
        self.alpha = alpha
        self.max_decodes = max_decodes
        self.alpha_max = alpha_max
        self.grid_size = grid_size
        self.margin = margin
        self.target_confidence = target_confidence
        self.overshoot = overshoot
        self.guidance_scale = guidance_scale
        self.decode_steps = decode_steps

    # ------------------------------------------------------------------ fitting
    def fit(self, context, Z, y_classifier):
        """Fit the latent surrogate of the explained classifier.

        Parameters
        ----------
        Z : ndarray of shape (n, latent_dim)
            Training latents.
        y_classifier : ndarray of shape (n,)
            The explained classifier's predicted class *indices* on the training images.
        """
        self._validate_params()
        if self.guidance_scale > 0 and not context.encoder.config_.null_latent:
            raise ValueError("DifCluE(guidance_scale > 0) needs an encoder trained with latent_dropout > 0; "
                             "this encoder has no null latent. Use guidance_scale=0.")
        finder = context.direction_finder
        Zs = (Z - finder.mean_) / finder.scale_
        classes = np.unique(y_classifier)
        if classes.size < 2:
            # The classifier predicts one class everywhere: the surrogate cannot propose steps.
            self.surrogate_ = None
        else:
            self.surrogate_ = LogisticRegression(C=1.0, max_iter=2000).fit(Zs, y_classifier)
        return self

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

    def _edit(self, finder, z, direction_ids, alphas):
        """Raw latents after stepping ``alphas`` along the standardised directions."""
        d = z.shape[1]
        w = torch.as_tensor(finder.directions_standardized_[direction_ids], dtype=z.dtype, device=z.device)
        mean = torch.as_tensor(finder.mean_, dtype=z.dtype, device=z.device)
        scale = torch.as_tensor(finder.scale_, dtype=z.dtype, device=z.device)
        a = torch.as_tensor(alphas, dtype=z.dtype, device=z.device)[:, None]
        zs = (z - mean) / scale + a * np.sqrt(d) * w
        return mean + scale * zs

    def _propose(self, finder, z, direction_ids, target):
        """Surrogate proposal: smallest grid step at which the surrogate predicts ``target``."""
        if self.surrogate_ is None:
            return np.full(len(direction_ids), 0.5 * self.alpha_max)
        d = z.shape[1]
        zs = (z.cpu().numpy() - finder.mean_) / finder.scale_
        w = finder.directions_standardized_[direction_ids]
        grid = np.linspace(self.alpha_max / self.grid_size, self.alpha_max, self.grid_size)
        points = zs[:, None, :] + grid[None, :, None] * np.sqrt(d) * w[:, None, :]
        pred = self.surrogate_.predict(points.reshape(-1, d)).reshape(len(zs), len(grid))
        hits = pred == np.asarray(target)[:, None]
        first = np.where(hits.any(axis=1), hits.argmax(axis=1), len(grid) - 1)
        return np.minimum(grid[first] * self.margin, self.alpha_max)

    # ------------------------------------------------------------------ generation
    def generate(self, context, x_0, targets):
        """Counterfactuals for a batch (see :class:`~skcfx.methods.base.CounterfactualMethod`)."""
        encoder, finder, proba = context.encoder, context.direction_finder, context.proba_model
        class_of_index = context.class_of_index
        decode_steps = self.decode_steps or encoder.decode_steps
        z, nfe_encode = encoder._encode_tensor(x_0)
        x_T, nfe_invert = encoder._invert_tensor(x_0, z)
        nfe = float(nfe_encode + nfe_invert)

        triples = self._slots(finder, targets, class_of_index)
        q = np.array([t[0] for t in triples], dtype=np.int64)
        tgt = np.array([t[1] for t in triples], dtype=np.int64)
        dirs = np.array([t[2] for t in triples], dtype=np.int64)
        zq, xq = z[q], x_T[q]

        def decode(alphas, idx=None):
            # Decode the pairs ``idx`` at their steps; returns images, flip flags, denoiser calls.
            idx = np.arange(len(tgt)) if idx is None else idx
            edited = self._edit(finder, zq[idx], dirs[idx], alphas[idx])
            images, calls = encoder._decode_tensor(edited, xq[idx], n_steps=decode_steps,
                                                   guidance_scale=self.guidance_scale)
            p = proba.torch_proba(images).detach().cpu().numpy()
            p_target = p[np.arange(len(idx)), tgt[idx]]
            flipped = (p.argmax(axis=1) == tgt[idx]) & (p_target >= self.target_confidence)
            return images, flipped, calls

        if self.alpha != "auto":
            alphas = np.full(len(triples), float(self.alpha))
            best, _, calls = decode(alphas)
            nfe += calls
            n_decodes = np.ones(len(triples))
        else:
            best, alphas, calls, n_decodes = self._search(finder, zq, dirs, tgt, decode)
            nfe += calls
            if self.overshoot > 1 and len(alphas):
                further = np.minimum(alphas * self.overshoot, self.alpha_max)
                images, flipped, calls = decode(further)
                nfe += calls
                n_decodes += 1
                keep = torch.as_tensor(flipped, device=images.device)
                best = torch.where(keep[:, None, None, None], images, best)
                alphas = np.where(flipped, further, alphas)

        cfs, cf_target, out_alpha, mode_ids = layout_slots(x_0, q, best, tgt, alphas, dirs)
        info = {"mean_decodes": float(np.mean(n_decodes)) if len(n_decodes) else 0.0}
        return MethodOutput(cfs, cf_target, out_alpha, mode_ids, nfe, info)

    def _search(self, finder, z, dirs, tgt, decode):
        """Bracketing search for the smallest flipping step (at most ``max_decodes`` decodes).

        Keeps, per pair, ``lo`` (largest step known not to flip) and ``hi`` (smallest step known
        to flip): grow by doubling while ``hi`` is unknown, bisect once it is known, stop a pair
        when its bracket is within 10% or it cannot grow past ``alpha_max``.
        """
        m = len(dirs)
        alpha = self._propose(finder, z, dirs, tgt)
        lo, hi = np.zeros(m), np.full(m, np.inf)
        best_images, best_alpha = None, alpha.copy()
        nfe, n_decodes = 0.0, np.zeros(m)
        active = np.ones(m, dtype=bool)
        for _ in range(self.max_decodes):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            images, flipped, calls = decode(alpha, idx)
            nfe += calls
            n_decodes[idx] += 1
            if best_images is None:
                best_images = images.new_zeros((m,) + tuple(images.shape[1:]))
            # A pair's image is replaced when it flips (smaller step than before, by construction)
            # or, while nothing flipped yet, by the latest (larger) step.
            replace = flipped | ~np.isfinite(hi[idx])
            best_images[idx[replace]] = images[torch.as_tensor(replace, device=images.device)]
            best_alpha[idx[replace]] = alpha[idx[replace]]
            hi[idx[flipped]] = alpha[idx[flipped]]
            lo[idx[~flipped]] = alpha[idx[~flipped]]
            known = np.isfinite(hi)
            alpha = np.where(known, 0.5 * (lo + hi), np.minimum(2.0 * alpha, self.alpha_max))
            converged = known & (hi - lo <= 0.1 * hi)
            stuck = ~known & (lo >= self.alpha_max)
            active = ~(converged | stuck)
        return best_images, best_alpha, nfe, n_decodes
