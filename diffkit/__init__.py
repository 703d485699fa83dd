"""diffkit: continuous and discrete diffusion as plug-ins of one interface."""

from diffkit.likelihood import NLLBound, nll_bound
from diffkit.processes import CategoricalProcess, ForwardProcess, GaussianProcess, NoiseSchedule, ProductProcess
from diffkit.sampling import sample, sampling_timesteps

__all__ = [
    "ForwardProcess",
    "GaussianProcess",
    "CategoricalProcess",
    "ProductProcess",
    "NoiseSchedule",
    "sample",
    "sampling_timesteps",
    "nll_bound",
    "NLLBound",
]
__version__ = "0.1.0"
