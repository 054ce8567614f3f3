"""DISSECT: K concept traversals learned jointly, on the DiffAE's semantic latent.

After Ghandeharioun et al., "DISSECT: Disentangled Simultaneous Explanations via Concept
Traversals" (ICLR 2022). DISSECT trains one generator ``G(x, c, k)`` that, for every concept
``k`` of a fixed number ``K`` and every desired classifier output ``c``, produces an image the
explained classifier scores ``c`` (importance), from which a posterior network can tell which
concept was traversed (distinctness), and which stays realistic and close to ``x`` (a GAN
discriminator and reconstruction terms). Here the generator is the *fixed, pretrained* diffusion
autoencoder, and what is learned is an edit of its semantic latent:

    zs  = (z - mean) / std                                  # standardised latent
    zs' = zs + s * sqrt(d) * (u[t, k] + h_k(zs, s, t))      # concept k, strength s, target t
    x'  = DDIM-decode(x_T, mean + std * zs')                # the query's own inverted noise

``u[t, k]`` is a learned direction per target class and concept and ``h`` a small MLP
(``hidden_dim`` units; its last layer starts at zero, ``hidden_dim=0`` leaves it out). The
strength ``s`` in [0, 1] requests the target-class probability ``p_0 + s (1 - p_0)``, where
``p_0`` is the classifier's probability of the target on the reconstruction: ``s = 0`` is the
reconstruction, ``s = 1`` asks for certainty.

Training (:meth:`DISSECT.fit`), on the training images, for ``n_steps`` Adam steps; each step
takes a batch of training images, one target class per image (any class but the one the
classifier predicts on its reconstruction) and one strength ``s ~ U(0, 1)`` per image, and
decodes all ``K`` traversals with ``train_decode_steps`` DDIM steps *with gradients* (through
the denoiser and the classifier; ``checkpoint`` recomputes each step in the backward pass). The
loss is::

    importance_weight   * KL(Bern(p_0 + s (1 - p_0)) || Bern(f_t(x'_k)))      # the classifier follows s
  + distinctness_weight * CE(D(x_rec, x'_k - x_rec), k)                       # concept k is recognisable
  + proximity_weight    * mean |x'_k - x_rec|                                 # close to the query
  + edit_weight         * mean (zs'_k - zs)^2 / d                             # stay on the latent manifold

averaged over the batch and the ``K`` concepts. ``D`` is a small convolutional posterior
network trained jointly with the edits on the same loss (cooperatively, as DISSECT's concept
posterior), so the edits are pushed to make the ``K`` traversals different.

Departures from the DISSECT paper, and why:

* **Generator.** DISSECT trains an image-to-image generator (with a projection cGAN
  discriminator) from scratch. Here the generator is the same pretrained DiffAE DifCluE uses, so
  the comparison isolates how the edits are found; only the latent edit (a few thousand
  parameters) and the posterior network are trained.
* **Realism.** No GAN discriminator: the decoder of a trained DiffAE makes realistic images from
  latents near the data, so a penalty on the size of the standardised edit (``edit_weight``)
  stands in for it. Realism is measured afterwards (FID), not trained adversarially.
* **Reconstruction.** DISSECT's reconstruction and cycle losses make ``G(x, f(x), k) = x``.
  Here the edit is zero at ``s = 0`` by construction, and the requested output is relative to the
  query's own ``p_0``, so strength 0 always returns the reconstruction; the L1 term to the
  reconstruction plays the part of the reconstruction loss at ``s > 0``.
* **Desired outputs.** DISSECT conditions on the classifier's desired output, discretised into
  bins, for a binary classifier. Here ``s`` is continuous and the edit is conditioned on a target
  class (a direction per target class and concept), so multi-class classifiers work.
* **Posterior network input.** DISSECT's posterior sees the pair of images; here it sees the
  reconstruction and the difference (the same information, centred on the edit).
* **Decode steps.** Training decodes with few DDIM steps (``train_decode_steps``, with the noise
  inverted with the same few steps so that ``s = 0`` reconstructs); explaining inverts with the
  encoder's ``encode_steps`` and decodes with ``decode_steps`` (as DifCluE does), so the edits
  learnt on short decodes are applied to longer, sharper ones.
* **Training images.** A random subset of at most ``max_train_images`` training images is
  inverted once at the start (their noise is reused at every step).

``K`` is fixed when fitting: changing ``n_concepts`` means training again, unlike DifCluE's
number of modes, and no clustering is used.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval
from tqdm.auto import tqdm

from .._images import to_tensor
from ..diffusion.sampling import NFECounter
from .base import CounterfactualMethod, MethodOutput, layout_slots, register_method

__all__ = ["DISSECT"]

_EPS = 1e-4


class _Traversals(torch.nn.Module):
    """The K latent edits: ``s * sqrt(d) * (u[t, k] + h_k(zs, s, t))`` in standardised units."""

    def __init__(self, n_classes, n_concepts, latent_dim, hidden_dim, init_scale):
        super().__init__()
        self.n_classes, self.n_concepts, self.latent_dim = n_classes, n_concepts, latent_dim
        u = torch.randn(n_classes, n_concepts, latent_dim)
        self.directions = torch.nn.Parameter(init_scale * u / u.norm(dim=-1, keepdim=True))
        self.mlp = None
        if hidden_dim > 0:
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(latent_dim + 1 + n_classes, hidden_dim), torch.nn.SiLU(),
                torch.nn.Linear(hidden_dim, n_concepts * latent_dim),
            )
            torch.nn.init.zeros_(self.mlp[2].weight)
            torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self, zs, s, target, concept):
        """Standardised edit of ``zs`` (m, d) for strengths ``s`` (m,), targets and concepts (m,)."""
        step = self.directions[target, concept]
        if self.mlp is not None:
            onehot = F.one_hot(target, self.n_classes).to(zs.dtype)
            out = self.mlp(torch.cat([zs, s[:, None], onehot], dim=1)).view(-1, self.n_concepts, self.latent_dim)
            step = step + out[torch.arange(len(zs), device=zs.device), concept]
        return s[:, None] * np.sqrt(self.latent_dim) * step


class _Posterior(torch.nn.Module):
    """Which concept was traversed, from the reconstruction and the edit (a small CNN)."""

    def __init__(self, in_channels, n_concepts, width=16):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(2 * in_channels, width, 3, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2 * width, n_concepts),
        )

    def forward(self, x_rec, x_cf):
        return self.net(torch.cat([x_rec, x_cf - x_rec], dim=1))


def _bernoulli_kl(p, q):
    """KL(Bern(p) || Bern(q)) elementwise, both clipped away from 0 and 1."""
    p, q = p.clamp(_EPS, 1 - _EPS), q.clamp(_EPS, 1 - _EPS)
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


@register_method
class DISSECT(CounterfactualMethod):
    """K jointly learned concept traversals of the DiffAE latent (after DISSECT, ICLR 2022).

    See :mod:`skcfx.methods.dissect` for the model, the losses and every departure from the
    paper. Needs a differentiable classifier (a TimmClassifier or a torch module).

    Parameters
    ----------
    n_concepts : int, default=2
        Number of concepts ``K`` (counterfactuals per query and target). Fixed at fit time:
        changing it means fitting again.
    strength : float in [0, 1], default=1.0
        Strength of the traversals :meth:`generate` makes: the requested target probability is
        ``p_0 + strength (1 - p_0)`` (``p_0``: the classifier's on the query).
    n_steps : int, default=300
        Training iterations (Adam steps).
    batch_size : int, default=16
        Training images per iteration; each is decoded once per concept.
    learning_rate : float, default=1e-2
        Adam learning rate of the edits and of the posterior network.
    hidden_dim : int, default=32
        Width of the MLP that makes the edit depend on the latent and the strength (0: one fixed
        direction per target class and concept).
    init_scale : float, default=0.3
        Initial norm of each direction (standardised units per ``sqrt(d)``: the step DifCluE
        calls alpha).
    importance_weight, distinctness_weight, proximity_weight, edit_weight : float
        Weights of the four loss terms (defaults 1.0, 2.0, 1.0, 0.05); see the module docstring. On
        16 px digits a distinctness weight of 0.5 let both traversals show the same digit; 2.0
        separated them (``benchmarks/dissect_compare.py``).
    train_decode_steps : int, default=3
        DDIM steps of the decodes trained through (and of the training images' inversion).
    decode_steps : int or None, default=10
        DDIM decoding steps of the counterfactuals (None: the encoder's ``decode_steps``).
    max_train_images : int, default=512
        Training images used (a random subset when there are more).
    checkpoint : bool, default=True
        Recompute every denoiser step in the backward pass instead of storing it (memory of one
        step; about 1.6x slower on a CPU).

    Attributes
    ----------
    traversals_ : torch.nn.Module
        The learned edits (on the CPU).
    posterior_ : torch.nn.Module
        The concept posterior network (on the CPU).
    latent_mean_, latent_scale_ : ndarray of shape (latent_dim,)
        Standardisation of the latents.
    n_classes_ : int
    history_ : dict of lists
        Per training step: ``'loss'``, ``'importance'``, ``'distinctness'``, ``'proximity'``,
        ``'edit'`` and ``'posterior_accuracy'``.
    fit_time_s_ : float
        Seconds spent training the traversals (inversion of the training images included).
    train_nfe_ : int
        Denoiser evaluations spent in training (forward passes; recomputations not counted).
    """

    name = "dissect"
    needs_gradients = True
    needs_training_images = True

    _parameter_constraints = {
        "n_concepts": [Interval(numbers.Integral, 1, None, closed="left")],
        "strength": [Interval(numbers.Real, 0, 1, closed="both")],
        "n_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "hidden_dim": [Interval(numbers.Integral, 0, None, closed="left")],
        "init_scale": [Interval(numbers.Real, 0, None, closed="neither")],
        "importance_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "distinctness_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "proximity_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "edit_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "train_decode_steps": [Interval(numbers.Integral, 1, 1000, closed="both")],
        "decode_steps": [Interval(numbers.Integral, 1, 1000, closed="both"), None],
        "max_train_images": [Interval(numbers.Integral, 1, None, closed="left")],
        "checkpoint": ["boolean"],
    }

    def __init__(self, n_concepts=2, *, strength=1.0, n_steps=300, batch_size=16, learning_rate=1e-2,
                 hidden_dim=32, init_scale=0.3, importance_weight=1.0, distinctness_weight=2.0,
                 proximity_weight=1.0, edit_weight=0.05, train_decode_steps=3, decode_steps=10,
                 max_train_images=512, checkpoint=True):
        self.n_concepts = n_concepts
        self.strength = strength
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.hidden_dim = hidden_dim
        self.init_scale = init_scale
        self.importance_weight = importance_weight
        self.distinctness_weight = distinctness_weight
        self.proximity_weight = proximity_weight
        self.edit_weight = edit_weight
        self.train_decode_steps = train_decode_steps
        self.decode_steps = decode_steps
        self.max_train_images = max_train_images
        self.checkpoint = checkpoint

    # ------------------------------------------------------------------ checks
    def _check_context(self, context):
        self._check_gradients(context)
        if context.training_images is None:
            raise ValueError("method='dissect' needs the training images (context.training_images); "
                             "fit it through CounterfactualExplainer.fit.")

    # ------------------------------------------------------------------ fitting
    def fit(self, context, Z, y):
        """Learn the ``n_concepts`` traversals jointly (see the module docstring).

        Parameters
        ----------
        context : ExplainContext
            With ``training_images`` (the images of ``Z``) and a ``generator`` seeding the
            initialisation and the batches.
        Z : ndarray of shape (n, latent_dim)
            Training latents, in the order of ``context.training_images``.
        y : ndarray of shape (n,)
            The classifier's predicted class indices on the training images (unused: the
            targets are drawn against the prediction on each reconstruction).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For bad parameters, a classifier without gradients, or missing training images.
        """
        self._validate_params()
        self._check_context(context)
        start = time.perf_counter()
        model, proba, device = context.model, context.proba_model, context.device
        Z = np.asarray(Z, dtype=np.float64)
        self.latent_mean_ = Z.mean(axis=0)
        self.latent_scale_ = Z.std(axis=0) + 1e-6
        generator = context.generator
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item()) \
            if generator is not None else int(np.random.randint(0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        self.n_classes_ = int(len(context.class_of_index))

        counter = NFECounter()
        data = self._training_set(context, rng, counter)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            traversals = _Traversals(self.n_classes_, self.n_concepts, model.latent_dim, self.hidden_dim,
                                     self.init_scale).to(device)
            posterior = _Posterior(model.image_shape[0], self.n_concepts).to(device)
        params = list(traversals.parameters()) + list(posterior.parameters())
        optimizer = torch.optim.Adam(params, lr=self.learning_rate)
        mean, scale = self._standardisation(device)

        history = {key: [] for key in ("loss", "importance", "distinctness", "proximity", "edit",
                                       "posterior_accuracy")}
        K, n = self.n_concepts, data["z"].shape[0]
        with tqdm(range(self.n_steps), desc="dissect: training traversals", disable=not context.verbose) as bar:
            for _ in bar:
                idx = torch.as_tensor(rng.choice(n, size=min(self.batch_size, n), replace=False), device=device)
                b = len(idx)
                target = self._draw_targets(data["p_rec"][idx], rng)
                s = torch.as_tensor(rng.uniform(0.0, 1.0, size=b), dtype=torch.float32, device=device)
                # all K concepts of every image: (b * K) decodes
                rep = idx.repeat_interleave(K)
                t_rep, s_rep = target.repeat_interleave(K), s.repeat_interleave(K)
                k_rep = torch.arange(K, device=device).repeat(b)
                zs = (data["z"][rep] - mean) / scale
                edit = traversals(zs, s_rep, t_rep, k_rep)
                x_cf = model.decode(mean + scale * (zs + edit), data["x_T"][rep], self.train_decode_steps,
                                    counter=counter, requires_grad=True, checkpoint=self.checkpoint)
                x_rec = data["x_rec"][rep]
                p0 = data["p_rec"][rep].gather(1, t_rep[:, None])[:, 0]
                wanted = p0 + s_rep * (1 - p0)
                p_cf = proba.torch_proba(x_cf).gather(1, t_rep[:, None])[:, 0]
                l_imp = _bernoulli_kl(wanted, p_cf).mean()
                logits = posterior(x_rec, x_cf)
                l_dist = F.cross_entropy(logits, k_rep) if K > 1 else logits.sum() * 0.0
                l_prox = (x_cf - x_rec).abs().mean()
                l_edit = edit.pow(2).mean()
                loss = (self.importance_weight * l_imp + self.distinctness_weight * l_dist
                        + self.proximity_weight * l_prox + self.edit_weight * l_edit)
                if not torch.isfinite(loss):
                    raise RuntimeError("DISSECT training diverged (non-finite loss): lower learning_rate.")
                # Gradients of the learned parts only: the DiffAE and the classifier stay untouched.
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                optimizer.zero_grad(set_to_none=True)
                for p, g in zip(params, grads):
                    p.grad = g
                optimizer.step()
                acc = float((logits.argmax(1) == k_rep).float().mean())
                for key, value in (("loss", loss), ("importance", l_imp), ("distinctness", l_dist),
                                   ("proximity", l_prox), ("edit", l_edit), ("posterior_accuracy", acc)):
                    history[key].append(float(value.detach()) if torch.is_tensor(value) else float(value))
                bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", imp=f"{history['importance'][-1]:.3f}", acc=f"{acc:.2f}")
        self.traversals_ = traversals.cpu().eval().requires_grad_(False)
        self.posterior_ = posterior.cpu().eval().requires_grad_(False)
        self.history_ = history
        self.train_nfe_ = int(counter.n_samples)
        self.fit_time_s_ = time.perf_counter() - start
        return self

    def _standardisation(self, device):
        mean = torch.as_tensor(self.latent_mean_, dtype=torch.float32, device=device)
        scale = torch.as_tensor(self.latent_scale_, dtype=torch.float32, device=device)
        return mean, scale

    def _training_set(self, context, rng, counter):
        """Latents, inverted noise, reconstruction and classifier probabilities of the training subset.

        The noise is inverted with ``train_decode_steps`` steps, so that decoding the unedited
        latent with as many steps gives back the reconstruction the targets are measured on.
        """
        model, proba, source = context.model, context.proba_model, context.training_images
        n = len(source)
        chosen = np.sort(rng.choice(n, size=min(n, self.max_train_images), replace=False))
        parts = {"z": [], "x_T": [], "x_rec": [], "p_rec": []}
        for start in range(0, len(chosen), 64):
            x_0 = to_tensor(source.numpy(chosen[start:start + 64]), context.device)
            with torch.no_grad():
                z = model.encode(x_0)
                x_T = model.invert(x_0, z, self.train_decode_steps, counter=counter)
                x_rec = model.decode(z, x_T, self.train_decode_steps, counter=counter)
                p_rec = proba.torch_proba(x_rec)
            for key, value in zip(parts, (z, x_T, x_rec, p_rec)):
                parts[key].append(value.detach())
        return {key: torch.cat(value) for key, value in parts.items()}

    def _draw_targets(self, p_rec, rng):
        """One target class index per image: any class but the one predicted on its reconstruction."""
        pred = p_rec.argmax(dim=1).cpu().numpy()
        offset = rng.integers(1, self.n_classes_, size=len(pred))
        return torch.as_tensor((pred + offset) % self.n_classes_, dtype=torch.long, device=p_rec.device)

    # ------------------------------------------------------------------ generation
    def edit_latents(self, z, strength, target, concept):
        """Raw latents after traversing ``concept`` towards ``target`` with ``strength``.

        Parameters
        ----------
        z : torch.Tensor of shape (m, latent_dim)
        strength : float or array-like of shape (m,)
        target, concept : array-like of int, shape (m,)
            Target class indices and concept indices.

        Returns
        -------
        torch.Tensor of shape (m, latent_dim)
        """
        device = z.device
        mean, scale = self._standardisation(device)
        traversals = self.traversals_.to(device)
        s = torch.as_tensor(np.broadcast_to(np.asarray(strength, dtype=np.float32), (len(z),)).copy(), device=device)
        t = torch.as_tensor(np.asarray(target), dtype=torch.long, device=device)
        k = torch.as_tensor(np.asarray(concept), dtype=torch.long, device=device)
        with torch.no_grad():
            zs = (z.float() - mean) / scale
            out = mean + scale * (zs + traversals(zs, s, t, k))
        self.traversals_.cpu()
        return out

    def generate(self, context, x_0, targets, strength=None):
        """``n_concepts`` counterfactuals per query and target (see
        :class:`~skcfx.methods.base.CounterfactualMethod`).

        Slots are laid out target by target, concept by concept; ``mode_ids`` holds the concept
        index and ``alphas`` the strength. Cost per query: the inversion (``encode_steps``) plus
        ``decode_steps`` per counterfactual, counted exactly.

        Parameters
        ----------
        strength : float or None, default=None
            Overrides the ``strength`` parameter (None: use it).
        """
        model = context.model
        strength = self.strength if strength is None else float(strength)
        decode_steps = self.decode_steps or context.decode_steps
        counter = NFECounter()
        with torch.no_grad():
            z = model.encode(x_0)
            x_T = model.invert(x_0, z, context.encode_steps, counter=counter)
        q, column = np.nonzero(np.asarray(targets) >= 0)
        q = np.repeat(q, self.n_concepts)
        tgt = np.asarray(targets)[q, np.repeat(column, self.n_concepts)].astype(np.int64)
        concept = np.tile(np.arange(self.n_concepts), len(q) // max(self.n_concepts, 1))
        if len(q):
            sel = torch.as_tensor(q, dtype=torch.long, device=x_0.device)
            edited = self.edit_latents(z[sel], strength, tgt, concept)
            with torch.no_grad():
                images = model.decode(edited, x_T[sel], decode_steps, counter=counter)
        else:
            images = x_0[:0]
        cfs, cf_target, alphas, mode_ids = layout_slots(x_0, q, images, tgt, np.full(len(q), strength), concept)
        return MethodOutput(cfs, cf_target, alphas, mode_ids, float(counter.n_samples),
                            {"strength": float(strength)})
