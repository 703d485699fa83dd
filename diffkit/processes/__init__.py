"""Forward processes: the ForwardProcess interface and its Gaussian, categorical and product kinds."""

from diffkit._checks import check_values, trusted_values
from diffkit.processes.base import ForwardProcess, Noised
from diffkit.processes.categorical import CategoricalProcess
from diffkit.processes.continuous_uniform import UniformProcess
from diffkit.processes.gaussian import GaussianParams, GaussianProcess
from diffkit.processes.masked import MaskedProcess
from diffkit.processes.product import ProductProcess
from diffkit.processes.schedules import NoiseSchedule

__all__ = [
    "ForwardProcess",
    "Noised",
    "GaussianProcess",
    "GaussianParams",
    "CategoricalProcess",
    "ProductProcess",
    "NoiseSchedule",
    "MaskedProcess",
    "UniformProcess",
    "check_values",
    "trusted_values",
]
