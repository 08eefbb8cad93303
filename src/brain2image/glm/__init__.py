"""Single-trial GLM (LSS / LSA betas in percent signal change) and reliability (NSD's ncsnr)."""

from .design import GlmSettings, TrialDesign, trial_design
from .reliability import ncsnr_from_repeats, noise_ceiling
from .single_trial import single_trial_betas

__all__ = ["GlmSettings", "TrialDesign", "trial_design", "single_trial_betas", "ncsnr_from_repeats",
           "noise_ceiling"]
