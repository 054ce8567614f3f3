"""Torch-only diffusion core: schedules, samplers, the DiffAE network and model, checkpoints.

:class:`DiffAE` (network + schedule: encode / invert / decode on tensors) is what
counterfactual methods work with; :class:`skcfx.DiffAEEncoder` is its scikit-learn face.

Nothing here imports the scikit-learn estimators; samplers take any denoiser
callable ``eps_model(x_t, t, **extra_args) -> eps`` (k-diffusion style).
"""

from .checkpoints import (
    create_net,
    default_config_for,
    get_config,
    list_configs,
    load_checkpoint,
    load_published_checkpoint,
    load_skcfx_checkpoint,
    register_config,
    save_skcfx_checkpoint,
)
from .model import DiffAE
from .nets import DiffAEConfig, DiffAENet, SemanticEncoder
from .sampling import (
    CountingDenoiser,
    LatentGuidedDenoiser,
    NFECounter,
    ddim_step,
    guidance_bounds,
    invert_ddim,
    predict_eps,
    predict_x0,
    q_sample,
    sample_ddim,
    sample_ddpm,
    sample_guided,
)
from .schedule import Schedule, alpha_bar, linear_betas, respace_timesteps

__all__ = [
    "CountingDenoiser",
    "DiffAE",
    "DiffAEConfig",
    "DiffAENet",
    "LatentGuidedDenoiser",
    "NFECounter",
    "Schedule",
    "SemanticEncoder",
    "alpha_bar",
    "create_net",
    "ddim_step",
    "default_config_for",
    "get_config",
    "guidance_bounds",
    "invert_ddim",
    "linear_betas",
    "list_configs",
    "load_checkpoint",
    "load_published_checkpoint",
    "load_skcfx_checkpoint",
    "predict_eps",
    "predict_x0",
    "q_sample",
    "register_config",
    "respace_timesteps",
    "sample_ddim",
    "sample_ddpm",
    "sample_guided",
    "save_skcfx_checkpoint",
]
