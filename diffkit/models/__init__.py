"""Denoiser networks: ``nn.Module``s called as ``denoiser(x_t, t)`` with ``t`` a (B,) int64 step.

Every model embeds time as the fraction t / T (``num_steps`` = T), so a model trained with one T is
sensible at another. Gaussian fields come back with the shape of ``x_t``; categorical fields come
back as logits (..., num_outputs).
"""

from diffkit.models.embeddings import SinusoidalEmbedding, TimeEmbedding, timestep_embedding
from diffkit.models.graph_transformer import GraphTransformer
from diffkit.models.mlp import MLPDenoiser
from diffkit.models.table import TableDenoiser
from diffkit.models.transformer import TokenTransformer
from diffkit.models.unet import UNet

__all__ = [
    "GraphTransformer",
    "MLPDenoiser",
    "TokenTransformer",
    "TableDenoiser",
    "UNet",
    "TimeEmbedding",
    "SinusoidalEmbedding",
    "timestep_embedding",
]
