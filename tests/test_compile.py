"""A torch.compile'd denoiser and bf16-mixed precision train and sample (tiny model, CPU).

``precision: bf16-mixed`` is also run through Lightning in
``tests/test_numerics.py::test_bf16_mixed_precision_training_with_lightning``; here both are run
through the same DiffusionModule path, and the compiled run is checked against the eager one.
"""

from __future__ import annotations

import pytest
import torch
from helpers.reliability import RowsDataModule, make_trainer, quiet_lightning

from diffkit import GaussianProcess
from diffkit.models import MLPDenoiser
from diffkit.module import DiffusionModule

T = 20


def fit(tmp_path, denoiser, precision="32-true", steps=3) -> tuple[DiffusionModule, list[float]]:
    quiet_lightning()
    losses: list[float] = []

    class Record(DiffusionModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            losses.append(float(loss.detach()))
            return loss

    model = Record(GaussianProcess(T), denoiser, "eps", num_eval_samples=0, noise_seed=0)
    data = torch.randn(48, 2, generator=torch.Generator().manual_seed(0))
    make_trainer(tmp_path, max_steps=steps, precision=precision).fit(model, RowsDataModule(data, batch_size=16))
    return model, losses


def test_bf16_mixed_training_and_sampling(tmp_path) -> None:
    torch.manual_seed(0)
    model, losses = fit(tmp_path, MLPDenoiser(2, T, hidden=16, depth=1), precision="bf16-mixed")
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = model.sample(8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (8, 2) and bool(torch.isfinite(x).all())


@pytest.mark.slow
def test_compiled_denoiser_trains_and_samples_like_the_eager_one(tmp_path) -> None:
    """torch.compile(denoiser): the same losses and samples as the eager module (up to float
    rounding of the compiled kernels). Slow: compiling takes about a minute on 2 CPU cores."""
    torch.manual_seed(0)
    eager_net = MLPDenoiser(2, T, hidden=16, depth=1)
    compiled_net = MLPDenoiser(2, T, hidden=16, depth=1)
    compiled_net.load_state_dict(eager_net.state_dict())
    compiled = torch.compile(compiled_net)
    assert compiled.num_steps == T  # forwarded by the wrapper: the module checks it against T
    eager, eager_losses = fit(tmp_path / "eager", eager_net)
    comp, comp_losses = fit(tmp_path / "compiled", compiled)
    torch.testing.assert_close(torch.tensor(comp_losses), torch.tensor(eager_losses), rtol=1e-4, atol=1e-5)
    a = eager.sample(8, num_steps=5, generator=torch.Generator().manual_seed(1))
    b = comp.sample(8, num_steps=5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
