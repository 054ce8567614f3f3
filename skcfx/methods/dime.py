"""DiME and FastDiME: counterfactuals by classifier-guided diffusion with the encoder's own network.

Both methods noise the query part-way (``tau`` of ``respacing`` steps) and denoise it again with the
*unconditional* denoiser (the DiffAE network with its learned null latent), shifting every
ancestral step towards the target class::

    z_tau = q_sample(x, tau - 1)                           # one start per counterfactual
    for i = tau - 1, ..., 0:
        eps   = eps_model(z_i, t_i)                        # one denoiser call
        x_hat = clean estimate of z_i                      # see below
        g     = grad_x_hat [lambda_c * L_class(x_hat) + lambda_p * L_perc(x_hat, x)] / s_i
                + lambda_l1 * grad_z sum |z_i - x|
        z_{i-1} = mean(z_i, eps) - Sigma_i * g + sqrt(Sigma_i) * noise   # ddim_step(eta=1)

with ``Sigma_i`` the DDPM posterior variance of the respaced chain. ``L_class`` is minus the target
logit (``class_loss='logit'``, the published setting) or the cross-entropy (``'ce'``). The
counterfactual is the last ``z``. Queries whose counterfactual does not reach the target class
are tried again with the next, stronger ``lambda_c`` (published: 8, 10, 15), from the same
``z_tau``; flipped ones are kept.

DiME (Jeanneret, Simon and Jurie, ACCV 2022)
    ``x_hat`` is the result of running the unguided stochastic chain from ``z_{i}`` all the way to
    0, without backpropagation through it, and ``s_i = sqrt(alpha_bar_i)``. For the first step
    ``x_hat`` is the query itself. Cost per counterfactual and attempt: ``tau`` guided calls plus
    ``1 + 2 + ... + (tau - 1)`` calls for the clean estimates, i.e. ``tau (tau + 1) / 2`` (1830 at
    ``tau=60``).
FastDiME (Weng, Pegios, Feragen, Petersen and Hauberg, 2023)
    ``x_hat = x0(z_i, eps)``, the one-step estimate from the *same* denoiser call, and ``s_i = 1``,
    so an attempt costs ``tau`` calls. After ``mask_warmup`` of the steps, a mask of the pixels
    that did not change keeps them equal to the query: ``d = mean_c |x_hat - x|`` normalised by
    its per-image maximum, max-pooled over ``dilation x dilation`` windows; where it is below
    ``mask_threshold`` the clean estimate is replaced by the query and the next ``z`` by the query
    noised to that step (by the query itself after the last step). The published code takes the
    clean estimate from the *previous* step's call; here it comes from the current one (same cost,
    an estimate of the current ``z``).

Implementation choices, measured against the published code (guillaumejs2403/DiME,
ppegiosk/FastDiME_CelebA):

* The published code noises the query to index ``tau`` and starts denoising at ``tau - 1``; here
  the query is noised to index ``tau - 1`` so the noise level and the first step agree. The number
  of guided steps (``tau``) is the same.
* The perceptual term of the paper uses VGG-19 features, whose weights cannot be downloaded here.
  With ``perceptual='auto'`` it uses the penultimate features of the *explained classifier* (when
  it is a timm network or a TimmClassifier), with the published distance (mean squared difference
  of features); any frozen differentiable ``perceptual(x_hat, x) -> (n,)`` callable can replace it.
* The L1 term acts on the noisy ``z_i`` (as published) and is neither scaled nor backpropagated
  through anything: its gradient is ``sign(z_i - x)``.
* The step variance is the posterior variance of the respaced chain (the published network
  learns it instead). It is 0 at the last step, so the last of the ``tau`` steps is unguided.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions

from ..classifiers import feature_extractor
from ..diffusion.sampling import NFECounter, q_sample, sample_guided
from .base import CounterfactualMethod, MethodOutput, layout_slots, register_method

__all__ = ["DiME", "FastDiME"]


# --------------------------------------------------------------------------------------------------
# helpers


@dataclass
class _Run:
    """What one call of ``generate`` shares between attempts (no validation inside)."""

    model: object  # counted unconditional denoiser
    schedule: object  # Schedule
    generator: torch.Generator
    proba: object  # ProbaModel
    perceptual: object  # callable(x_hat, x) -> (n,) or None
    verbose: bool


class _FeatureDistance:
    """Mean squared difference of a frozen feature extractor's outputs (DiME's perceptual term)."""

    def __init__(self, features):
        self.features = features

    def __call__(self, x_hat, x_0):
        with torch.no_grad():
            reference = self.features(x_0)
        return (self.features(x_hat) - reference).pow(2).flatten(1).mean(dim=1)


def _randn(like, generator):
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _pairs(targets, n_samples):
    """Query and target index of every counterfactual: ``n_samples`` per valid (query, target)."""
    targets = np.asarray(targets, dtype=np.int64).reshape(len(targets), -1)
    query, column = np.nonzero(targets >= 0)
    query = np.repeat(query, n_samples)
    return query, targets[query, np.repeat(column, n_samples)]


def _unchanged_mask(x_hat, x_0, dilation, threshold):
    """FastDiME's mask: 1 where neither a pixel nor its neighbours changed noticeably, else 0.

    ``d = mean over channels of |x_hat - x_0|``, divided by its per-image maximum (so ``threshold``
    is relative), then max-pooled over ``dilation x dilation`` windows so that the edited region
    keeps a margin.
    """
    diff = (x_hat - x_0).abs().mean(dim=1, keepdim=True)
    peak = diff.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    pooled = F.max_pool2d(diff / peak, dilation, stride=1, padding=dilation // 2)
    return (pooled < threshold).to(x_hat.dtype)


# --------------------------------------------------------------------------------------------------
# shared algorithm


class _GuidedDiffusion(CounterfactualMethod):
    """Shared parameters, checks and guided chain of DiME and FastDiME (see module docstring)."""

    needs_gradients = True
    needs_unconditional = True
    #: the clean estimate the gradient is taken on (see skcfx.diffusion.sampling.sample_guided)
    _clean_estimate = "rollout"
    #: divide the guidance of the clean estimate by sqrt(alpha_bar) (DiME) or not (FastDiME)
    _scale_by_alpha = True

    _parameter_constraints = {
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "respacing": [Interval(numbers.Integral, 1, None, closed="left")],
        "tau": [Interval(numbers.Integral, 1, None, closed="left")],
        "lambda_c": [Interval(numbers.Real, 0, None, closed="neither"), "array-like"],
        "lambda_p": [Interval(numbers.Real, 0, None, closed="left")],
        "lambda_l1": [Interval(numbers.Real, 0, None, closed="left")],
        "class_loss": [StrOptions({"logit", "ce"})],
        "perceptual": [StrOptions({"auto"}), callable, None],
        "clip_grad": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "eta": [Interval(numbers.Real, 0, 1, closed="right")],
    }

    # ------------------------------------------------------------------ checks
    def _lambda_schedule(self):
        """``lambda_c`` as a non-empty tuple of positive floats."""
        values = np.atleast_1d(np.asarray(self.lambda_c, dtype=object))
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"lambda_c must be a positive number or a sequence of them, got {self.lambda_c!r}."
            ) from None
        if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(
                f"lambda_c must be a positive number or a non-empty sequence of them, got {self.lambda_c!r}."
            )
        return tuple(float(v) for v in values)

    def _check_context(self, context):
        """Raise a clear error when the classifier or the encoder cannot serve this method."""
        self._check_gradients(context)
        if not context.model.has_null_latent:
            raise ValueError(
                f"method={self.name!r} needs an unconditional denoiser: fit the encoder with "
                "latent_dropout > 0 (a learned null latent)."
            )

    def _schedule(self, model):
        """The respaced schedule, with errors that name this method's parameters."""
        T = model.T
        try:
            schedule = model.schedule(self.respacing)
        except ValueError as exc:
            raise ValueError(f"respacing={self.respacing} does not suit the encoder's T={T}: {exc}") from None
        if self.tau > len(schedule):
            raise ValueError(f"tau={self.tau} must be at most respacing={self.respacing}.")
        return schedule

    def _perceptual_fn(self, proba):
        """``(distance function or None, source)`` for the perceptual term."""
        if self.perceptual is None or self.lambda_p == 0:
            return None, "none"
        if callable(self.perceptual):
            return self.perceptual, "callable"
        module = getattr(proba, "module", None)
        if callable(getattr(module, "forward_features", None)) and callable(getattr(module, "forward_head", None)):
            return _FeatureDistance(feature_extractor(proba).torch_features), "classifier"
        return None, "none"

    def _prepare(self, context):
        self._validate_params()
        self._check_context(context)
        return self._lambda_schedule(), self._schedule(context.model)

    # ------------------------------------------------------------------ fitting
    def fit(self, context, Z, y):
        """Check that the classifier and the encoder suit the method (nothing is learned).

        Parameters
        ----------
        context : ExplainContext
        Z : ndarray of shape (n, latent_dim)
            Training latents (unused).
        y : ndarray of shape (n,)
            The classifier's predicted class indices on the training images (unused).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When the classifier is not differentiable, the encoder has no null latent, or the
            parameters do not fit the encoder's schedule.
        """
        self._prepare(context)
        _, self.perceptual_source_ = self._perceptual_fn(context.proba_model)
        if self.perceptual == "auto" and self.lambda_p > 0 and self.perceptual_source_ == "none":
            warnings.warn(
                f"method={self.name!r}: the classifier exposes no penultimate features (it is not a "
                "timm network), so the perceptual term is left out; pass perceptual=callable to "
                "set one, or lambda_p=0 to silence this warning.",
                UserWarning,
                stacklevel=2,
            )
        return self

    # ------------------------------------------------------------------ generation
    def generate(self, context, x_0, targets):
        """Counterfactuals for a batch (see :class:`~skcfx.methods.base.CounterfactualMethod`).

        Makes ``n_samples`` counterfactuals per (query, target) pair. ``n_function_evals`` is the
        exact number of denoiser evaluations (images through the network) of the whole batch.
        """
        lambdas, schedule = self._prepare(context)
        perceptual, _ = self._perceptual_fn(context.proba_model)
        counter = NFECounter()
        model = context.model.denoiser(counter, unconditional=True)
        run = _Run(model, schedule, context.generator, context.proba_model, perceptual, bool(context.verbose))
        query, target = _pairs(targets, self.n_samples)
        x = x_0[torch.as_tensor(query, dtype=torch.long, device=x_0.device)]
        images, attempts, flipped = self._explain_pairs(run, x, target, lambdas)
        cfs, cf_target, alphas, mode_ids = layout_slots(
            x_0, query, images, target, np.full(len(query), np.nan), np.full(len(query), -1, dtype=np.int64)
        )
        info = {
            "attempts_mean": float(attempts.mean()) if attempts.size else 0.0,
            "flipped_rate": float(flipped.mean()) if flipped.size else 0.0,
        }
        return MethodOutput(cfs, cf_target, alphas, mode_ids, float(counter.n_samples), info)

    def _explain_pairs(self, run, x, target, lambdas):
        """Run the attempts; each one only for the pairs that have not flipped yet.

        Returns the counterfactuals (the last attempt's for pairs that never flipped), the number
        of attempts per pair and whether each pair flipped.
        """
        m = x.shape[0]
        images = x.clone()
        attempts = np.zeros(m, dtype=np.int64)
        flipped = np.zeros(m, dtype=bool)
        if m == 0:
            return images, attempts, flipped
        # One start per counterfactual, shared by its retries (as published): a retry changes the
        # guidance strength only.
        z_start = q_sample(x, self.tau - 1, run.schedule, _randn(x, run.generator))
        target_t = torch.as_tensor(target, dtype=torch.long, device=x.device)
        for k, lambda_c in enumerate(lambdas):
            todo = np.flatnonzero(~flipped)
            if todo.size == 0:
                break
            sel = torch.as_tensor(todo, dtype=torch.long, device=x.device)
            out = self._chain(run, x[sel], z_start[sel], target_t[sel], lambda_c, desc=f"{self.name} attempt {k + 1}")
            images[sel] = out
            attempts[todo] += 1
            with torch.no_grad():
                predicted = run.proba.torch_proba(out).argmax(dim=1).cpu().numpy()
            flipped[todo] = predicted == target[todo]
        return images, attempts, flipped

    def _chain(self, run, x_0, z, target, lambda_c, desc):
        """One guided denoising chain from ``z`` (index ``tau - 1``) to a clean image."""

        def grad_fn(x_hat):
            # Class and perceptual terms, on the clean estimate.
            x_in = x_hat.detach().requires_grad_(True)
            logits = run.proba.torch_logits(x_in)
            if self.class_loss == "ce":
                logits = torch.log_softmax(logits, dim=1)
            loss = -lambda_c * logits.gather(1, target[:, None]).sum()
            if run.perceptual is not None:
                loss = loss + self.lambda_p * run.perceptual(x_in, x_0).sum()
            (grad,) = torch.autograd.grad(loss, x_in)
            return grad

        def z_grad_fn(z_t):
            # The L1 term acts on the noisy z itself: its gradient is sign(z_t - x).
            return self.lambda_l1 * torch.sign(z_t - x_0)

        return sample_guided(
            run.model, z, run.schedule, self.tau - 1, grad_fn=grad_fn, generator=run.generator,
            clean_estimate=self._clean_estimate, x_hat=x_0,  # DiME's first estimate is the query
            scale_by_alpha=self._scale_by_alpha, z_grad_fn=z_grad_fn if self.lambda_l1 > 0 else None,
            clip_grad=self.clip_grad, eta=self.eta, mask_fn=self._mask_fn(x_0), reference=x_0,
            disable=not run.verbose,
        )

    def _mask_fn(self, x_0):
        """``mask_fn`` for :func:`~skcfx.diffusion.sampling.sample_guided` (None: no mask)."""
        return None


# --------------------------------------------------------------------------------------------------
# public methods


_SHARED_PARAMETERS = """
    n_samples : int, default=1
        Counterfactuals per (query, target) pair, each from its own noise (their spread is
        DiME's diversity, sigma_L).
    respacing : int, default=200
        Steps of the respaced diffusion chain (must divide the encoder's ``T``).
    tau : int, default=60
        Depth of the noising, in respaced steps: the query is noised to step ``tau`` and denoised
        again in ``tau`` guided steps. Larger changes more.
    lambda_c : float or sequence of float, default=(8, 10, 15)
        Classifier guidance strengths tried in order; a stronger one is tried only for the
        counterfactuals that did not reach the target class yet.
    lambda_p : float, default=30.0
        Weight of the perceptual distance between the clean estimate and the query.
    lambda_l1 : float, default=0.05
        Weight of the L1 distance between the noisy ``z_t`` and the query.
    class_loss : {'logit', 'ce'}, default='logit'
        Minus the target logit (published setting) or the cross-entropy towards the target.
    perceptual : 'auto', callable or None, default='auto'
        Perceptual distance. ``'auto'``: mean squared difference of the explained classifier's
        penultimate features (timm networks and TimmClassifiers; otherwise the term is left out
        with a warning). VGG features, as in the paper, would need downloaded weights. A callable
        ``perceptual(x_hat, x) -> (n,)`` on ``(n, C, H, W)`` tensors in [-1, 1], differentiable in
        ``x_hat``, replaces it. ``None`` leaves the term out.
    clip_grad : float or None, default=None
        Largest L2 norm of each image's guidance gradient (None: no clipping).
    eta : float in (0, 1], default=1.0
        Stochasticity of the steps (1: the DDPM ancestral step of the paper). The guidance
        shift is scaled by the step's variance, so smaller values also guide less."""


@register_method
class DiME(_GuidedDiffusion):
    __doc__ = f"""Diffusion Models for counterfactual Explanations (Jeanneret et al., ACCV 2022).

    Classifier-guided denoising of the partly noised query with the encoder's unconditional
    denoiser; the guidance gradient is taken on a clean estimate obtained by running the
    unguided chain to the end at every step (see :mod:`skcfx.methods.dime`). Needs a
    differentiable classifier and an encoder fitted with ``latent_dropout > 0``.

    Parameters
    ----------{_SHARED_PARAMETERS}

    Attributes
    ----------
    perceptual_source_ : {{'classifier', 'callable', 'none'}}
        Which perceptual distance :meth:`fit` found.

    Notes
    -----
    Cost: ``tau (tau + 1) / 2`` denoiser evaluations per counterfactual and attempt (1830 at
    ``tau=60``), up to ``len(lambda_c)`` attempts.
    """

    name = "dime"
    _scale_by_alpha = True

    def __init__(self, n_samples=1, *, respacing=200, tau=60, lambda_c=(8, 10, 15), lambda_p=30.0, lambda_l1=0.05,
                 class_loss="logit", perceptual="auto", clip_grad=None, eta=1.0):
        self.n_samples = n_samples
        self.respacing = respacing
        self.tau = tau
        self.lambda_c = lambda_c
        self.lambda_p = lambda_p
        self.lambda_l1 = lambda_l1
        self.class_loss = class_loss
        self.perceptual = perceptual
        self.clip_grad = clip_grad
        self.eta = eta


@register_method
class FastDiME(_GuidedDiffusion):
    __doc__ = f"""FastDiME (Weng et al., 2023): DiME with a one-step clean estimate and a self-made mask.

    The guidance gradient is taken on the clean estimate ``x0(z_t)`` of the same denoiser call
    (no extra calls, no ``1 / sqrt(alpha_bar)`` scaling); after ``mask_warmup`` of the steps, the
    pixels that did not change are reset to the (noised) query (see :mod:`skcfx.methods.dime`).

    Parameters
    ----------{_SHARED_PARAMETERS}
    mask_threshold : float in (0, 1] or None, default=0.15
        Pixels whose normalised, dilated change is below this value are kept equal to the query.
        ``None`` disables the mask.
    dilation : int, default=5
        Odd side of the max-pooling window that widens the changed region.
    mask_warmup : float in [0, 1], default=0.5
        Fraction of the ``tau`` steps run before the mask is used (published: 30 of 60).

    Attributes
    ----------
    perceptual_source_ : {{'classifier', 'callable', 'none'}}
        Which perceptual distance :meth:`fit` found.

    Notes
    -----
    Cost: ``tau`` denoiser evaluations per counterfactual and attempt.
    """

    name = "fastdime"
    _clean_estimate = "one_step"
    _scale_by_alpha = False

    _parameter_constraints = {
        **_GuidedDiffusion._parameter_constraints,
        "mask_threshold": [Interval(numbers.Real, 0, 1, closed="right"), None],
        "dilation": [Interval(numbers.Integral, 1, None, closed="left")],
        "mask_warmup": [Interval(numbers.Real, 0, 1, closed="both")],
    }

    def __init__(self, n_samples=1, *, respacing=200, tau=60, lambda_c=(8, 10, 15), lambda_p=30.0, lambda_l1=0.05,
                 class_loss="logit", perceptual="auto", clip_grad=None, eta=1.0, mask_threshold=0.15, dilation=5,
                 mask_warmup=0.5):
        self.n_samples = n_samples
        self.respacing = respacing
        self.tau = tau
        self.lambda_c = lambda_c
        self.lambda_p = lambda_p
        self.lambda_l1 = lambda_l1
        self.class_loss = class_loss
        self.perceptual = perceptual
        self.clip_grad = clip_grad
        self.eta = eta
        self.mask_threshold = mask_threshold
        self.dilation = dilation
        self.mask_warmup = mask_warmup

    def _prepare(self, context):
        prepared = super()._prepare(context)
        if self.dilation % 2 != 1:
            raise ValueError(f"dilation must be an odd int (the window is centred on each pixel), got {self.dilation}.")
        return prepared

    def _mask_fn(self, x_0):
        if self.mask_threshold is None:
            return None
        warmup = int(round(self.mask_warmup * self.tau))

        def mask_fn(x_hat, step):
            if step < warmup:
                return None
            return _unchanged_mask(x_hat, x_0, self.dilation, self.mask_threshold)

        return mask_fn
