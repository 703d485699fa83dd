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
    "DiffusionModule",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> type:
    # diffkit.DiffusionModule (docs/design.md's public name) without importing Lightning for `import diffkit`.
    if name == "DiffusionModule":
        from diffkit.module import DiffusionModule

        return DiffusionModule
    raise AttributeError(f"module 'diffkit' has no attribute {name!r}")
