"""diffkit-bitflip: a user's own forward process (independent bit flips) plugged into diffkit.

``BitFlipProcess`` implements diffkit's ForwardProcess with its own closed forms (see
``diffkit_bitflip.process``); ``BinaryPatternsDataModule`` yields (B, 16) int64 bits to train it on.
Both are registered under the ``diffkit.plugins`` entry-point group, so once the package is
installed a ``diffkit fit`` config may name them by their short class names.
"""

from diffkit_bitflip.data import BinaryPatternsDataModule
from diffkit_bitflip.process import BitFlipProcess, cosine_flip_probs, flip_marginal, flip_posterior

__all__ = ["BitFlipProcess", "BinaryPatternsDataModule", "cosine_flip_probs", "flip_marginal", "flip_posterior"]
