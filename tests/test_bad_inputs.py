"""Bad inputs fail early and clearly: one test per case, each asserting the exception type and
its message (docs/design.md: ValueError / TypeError at the public boundary, naming the argument, what
was found and what was expected).

``CASES`` is the table (input -> expected message) for the issue note; run with ``-s`` to print
it with the message each case actually produced. A case given a ``bug`` text is a strict xfail
(a missing guard or a misleading message, its ``reason`` naming the code and the fix, its pattern
the message proposed); none is left at present.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers.reliability import RowsDataModule, make_trainer, quiet_lightning

from diffkit import CategoricalProcess, GaussianProcess, NoiseSchedule, ProductProcess, sample
from diffkit.models import MLPDenoiser, TokenTransformer
from diffkit.module import DiffusionModule
from diffkit.processes.gaussian import EpsParametrization

T, K = 10, 4
X = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
IDS = torch.randint(0, K, (3, 5), generator=torch.Generator().manual_seed(0))


def gauss() -> GaussianProcess:
    return GaussianProcess(T)


def cat(kind: str = "uniform") -> CategoricalProcess:
    return CategoricalProcess(K, T, kind)


def table_process() -> ProductProcess:
    return ProductProcess({"X": cat(), "n": gauss()})


# ------------------------------------------------------------------------------ module-level helpers
def _fit(tmp: Path, model: DiffusionModule, data, ckpt_path=None, steps: int = 1) -> None:
    make_trainer(tmp, max_steps=steps).fit(
        model, RowsDataModule(data, batch_size=8, shuffle_seed=None), ckpt_path=ckpt_path
    )


def _gauss_module(T_: int = T, schedule: str = "cosine", denoiser=None) -> DiffusionModule:
    return DiffusionModule(
        GaussianProcess(T_, schedule), denoiser or MLPDenoiser(2, T_, hidden=8, depth=1), "eps", num_eval_samples=0
    )


def _token_module(transition="uniform", T_: int = T, schedule: str = "cosine") -> DiffusionModule:
    proc = CategoricalProcess(K, T_, transition, schedule)
    return DiffusionModule(
        proc, TokenTransformer(proc.num_states, K, 5, T_, d_model=8, depth=1, heads=2), "x0", num_eval_samples=0
    )


def _resume_mismatch(tmp: Path, first: DiffusionModule, second: DiffusionModule, data) -> None:
    """Train ``first`` one step, checkpoint, then fit ``second`` from that checkpoint."""
    trainer = make_trainer(tmp, max_steps=1)
    trainer.fit(first, RowsDataModule(data, batch_size=8, shuffle_seed=None))
    trainer.save_checkpoint(tmp / "first.ckpt")
    _fit(tmp, second, data, ckpt_path=tmp / "first.ckpt", steps=2)


class WrongWidth(torch.nn.Module):
    """A denoiser for 2-D data that returns 3 features."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)

    def forward(self, x_t, t):
        return self.lin(x_t)


def _matrices(a: float) -> torch.Tensor:
    return torch.eye(K).expand(T, K, K) * (1 - a) + a / K


# ------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Case:
    id: str
    input: str  # what was passed, in words
    run: Callable[[Path], object]
    error: type[Exception]
    match: str  # regex for the message (re.search)
    bug: str | None = None  # set: strict xfail, naming the library bug and the fix


CASES: list[Case] = [
    # -- class ids
    Case(
        "float-ids-fit",
        "DiffusionModule(CategoricalProcess) fit on float32 ids",
        lambda tmp: _fit(tmp, _token_module(), IDS.float()),
        TypeError,
        r"batch: expected int64 class ids for a categorical field, got dtype torch\.float32",
    ),
    Case(
        "float-ids-validate",
        "CategoricalProcess.validate_x0(float32 ids)",
        lambda tmp: cat().validate_x0(IDS.float()),
        TypeError,
        r"x0: expected int64 class ids for a categorical field, got dtype torch\.float32",
    ),
    Case(
        "float-ids-q_sample",
        "CategoricalProcess(K=4).q_sample(float32 ids of shape (3, 5), t)",
        lambda tmp: cat().q_sample(IDS.float(), 2),
        TypeError,
        r"x0: expected int64 class ids",
    ),
    Case(
        "ids-out-of-range",
        "q_sample(ids with a 7, K=4)",
        lambda tmp: cat().q_sample(IDS + 4, 2),
        ValueError,
        r"x0: found class id \d+, expected ids in \[0, 4\)",
    ),
    Case(
        "negative-ids",
        "q_sample(ids with -5)",
        lambda tmp: cat().q_sample(IDS - 5, 2),
        ValueError,
        r"x0: found class id -\d, expected ids in \[0, 4\)",
    ),
    Case(
        "ids-out-of-range-fit",
        "fit on ids containing K",
        lambda tmp: _fit(tmp, _token_module(), IDS.clamp_max(K - 1).index_fill(1, torch.tensor([2]), K)),
        ValueError,
        r"batch: found class id 4, expected ids in \[0, 4\)",
    ),
    Case(
        "absorbing-mask-in-data",
        "absorbing q_sample(x0 containing the mask id K)",
        lambda tmp: cat("absorbing").q_sample(torch.full((3, 5), K), 2),
        ValueError,
        r"x0: found class id 4, expected ids in \[0, 4\) \(id 4 is the absorbing mask state, never valid in data\)",
    ),
    Case(
        "x_t-out-of-range",
        "posterior(x_t with id >= num_states)",
        lambda tmp: cat().posterior(IDS + K, IDS, 2),
        ValueError,
        r"x_t: found class id \d+, expected ids in \[0, 4\)",
    ),
    Case(
        "float-x_t",
        "posterior(float x_t)",
        lambda tmp: cat().posterior(IDS.float(), IDS, 2),
        TypeError,
        r"x_t: expected int64 class ids for a categorical field, got dtype torch\.float32",
    ),
    # -- continuous data
    Case(
        "nan-data",
        "GaussianProcess.q_sample(x0 with NaN)",
        lambda tmp: gauss().q_sample(X * float("nan"), 2),
        ValueError,
        r"x0: found NaN or inf in Gaussian data",
    ),
    Case(
        "inf-data",
        "GaussianProcess.q_sample(x0 with inf)",
        lambda tmp: gauss().q_sample(X / 0, 2),
        ValueError,
        r"x0: found NaN or inf in Gaussian data",
    ),
    Case(
        "nan-data-fit",
        "DiffusionModule(GaussianProcess) fit on data with NaN",
        lambda tmp: _fit(tmp, _gauss_module(), torch.cat([X, X * float("nan")])),
        ValueError,
        r"batch: found NaN or inf in Gaussian data",
    ),
    Case(
        "int-data-gaussian",
        "GaussianProcess.q_sample(int64 x0)",
        lambda tmp: gauss().q_sample(IDS, 2),
        TypeError,
        r"x0: a Gaussian field expects floating-point data, got dtype torch\.int64",
    ),
    # -- shapes
    Case(
        "gauss-posterior-shapes",
        "GaussianProcess.posterior(x_t (3, 2), x0 (3, 3))",
        lambda tmp: gauss().posterior(X, torch.zeros(3, 3), 2),
        ValueError,
        r"x0: shape \(3, 3\) does not match x_t \(3, 2\)",
    ),
    Case(
        "cat-posterior-shapes",
        "CategoricalProcess.posterior(x_t (3, 5), x0 (3, 4))",
        lambda tmp: cat().posterior(IDS, IDS[:, :4], 2),
        ValueError,
        r"x0: shape \(3, 4\) does not match x_t \(3, 5\)",
    ),
    Case(
        "gauss-noise-shape",
        "GaussianProcess.q_sample(x0 (3, 2), noise (3, 3))",
        lambda tmp: gauss().q_sample(X, 2, torch.zeros(3, 3)),
        ValueError,
        r"noise: shape \(3, 3\) does not match x0 \(3, 2\)",
    ),
    Case(
        "cat-noise-shape",
        "CategoricalProcess.q_sample(ids (3, 5), Gumbel noise (3, 5, 3))",
        lambda tmp: cat().q_sample(IDS, 2, torch.zeros(3, 5, 3)),
        ValueError,
        r"noise: expected Gumbel noise of shape \(3, 5, 4\), got \(3, 5, 3\)",
    ),
    Case(
        "denoiser-output-shape-fit",
        "fit with a denoiser returning (B, 3) for (B, 2) data",
        lambda tmp: _fit(tmp, _gauss_module(denoiser=WrongWidth()), X.repeat(4, 1)),
        ValueError,
        r"denoiser output: shape \(8, 3\) does not match the 'eps' parametrization of GaussianProcess, which expects "
        r"\(8, 2\)",
    ),
    Case(
        "denoiser-output-shape-check",
        "EpsParametrization.check_output(output (3, 1), x_t (3, 2))",
        lambda tmp: EpsParametrization().check_output(gauss(), torch.zeros(3, 1), X),
        ValueError,
        r"denoiser output: shape \(3, 1\) does not match the 'eps' parametrization of GaussianProcess, which expects "
        r"\(3, 2\)",
    ),
    Case(
        "loss-output-shape",
        "GaussianProcess.loss(output (3, 1), x0 (3, 2), ...)",
        lambda tmp: gauss().loss(torch.zeros(3, 1), X, X, torch.full((3,), 2), None, "eps"),
        ValueError,
        r"output: shape \(3, 1\) does not match the 'eps' parametrization of GaussianProcess, which expects \(3, 2\) "
        r"for x_t of shape \(3, 2\)",
    ),
    Case(
        "loss-output-classes",
        "CategoricalProcess(K=4).loss(logits (3, 5, 3), ...)",
        lambda tmp: cat().loss(torch.zeros(3, 5, 3), IDS, IDS, torch.full((3,), 2), None, "x0"),
        ValueError,
        r"output: shape \(3, 5, 3\) does not match the 'x0' parametrization of CategoricalProcess, which expects "
        r"\(3, 5, 4\) for x_t of shape \(3, 5\)",
    ),
    Case(
        "loss-x_t-vs-x0",
        "GaussianProcess.loss(output, x0 (3, 2), x_t (3, 1), ...)",
        lambda tmp: gauss().loss(torch.zeros(3, 2), X, torch.zeros(3, 1), torch.full((3,), 2), None, "eps"),
        ValueError,
        r"x_t: shape \(3, 1\) does not match x0 \(3, 2\)",
    ),
    # -- parametrizations
    Case(
        "param-eps-for-categorical",
        "DiffusionModule(CategoricalProcess, parametrization='eps')",
        lambda tmp: DiffusionModule(cat(), MLPDenoiser(2, T), "eps"),
        ValueError,
        r"parametrization: 'eps' is not valid for CategoricalProcess; expected one of \['previous-step', 'x0'\]",
    ),
    Case(
        "param-typo",
        "GaussianProcess.get_parametrization('epsilon')",
        lambda tmp: gauss().get_parametrization("epsilon"),
        ValueError,
        r"parametrization: 'epsilon' is not valid for GaussianProcess; expected one of \['eps', 'previous-step', "
        r"'v', 'x0'\]",
    ),
    Case(
        "product-param-unknown-field",
        "DiffusionModule(ProductProcess{X, n}, {'X': 'x0', 'n': 'eps', 'Y': 'x0'})",
        lambda tmp: DiffusionModule(table_process(), MLPDenoiser(2, T), {"X": "x0", "n": "eps", "Y": "x0"}),
        ValueError,
        r"parametrization: unknown field\(s\) \['Y'\]; the fields are \['X', 'n'\]",
    ),
    Case(
        "product-param-missing-field",
        "ProductProcess{X, n}.get_parametrization({'X': 'x0'})",
        lambda tmp: table_process().get_parametrization({"X": "x0"}),
        ValueError,
        r"parametrization: no parametrization given for field\(s\) \['n'\]",
    ),
    Case(
        "product-param-wrong-for-field",
        "ProductProcess{X: categorical, n}.get_parametrization({'X': 'eps', 'n': 'eps'})",
        lambda tmp: table_process().get_parametrization({"X": "eps", "n": "eps"}),
        ValueError,
        r"parametrization: 'eps' is not valid for CategoricalProcess",
    ),
    Case(
        "product-data-missing-field",
        "ProductProcess{X, n}.q_sample({'X': ids})",
        lambda tmp: table_process().q_sample({"X": IDS}, 2),
        ValueError,
        r"x0: missing field\(s\) \['n'\]; expected \['X', 'n'\]",
    ),
    Case(
        "product-float-mask",
        "ProductProcess.q_sample with a float node mask",
        lambda tmp: ProductProcess({"X": cat()}).q_sample({"X": IDS, "mask": torch.ones(3, 5)}, 2),
        TypeError,
        r"x0\['mask'\]: expected a bool node mask, got dtype torch\.float32",
    ),
    Case(
        "product-asymmetric-edges",
        "ProductProcess(symmetric=['E']).q_sample(non-symmetric E)",
        lambda tmp: ProductProcess({"E": cat()}, symmetric=["E"]).q_sample(
            {"E": torch.triu(torch.ones(2, 3, 3, dtype=torch.long), 1)}, 2
        ),
        ValueError,
        r"x0\['E'\]: symmetric field is not symmetric",
    ),
    # -- checkpoints
    Case(
        "ckpt-T",
        "fit(GaussianProcess(T=20) model, ckpt_path=checkpoint of T=10)",
        lambda tmp: _resume_mismatch(tmp, _gauss_module(10), _gauss_module(20), X.repeat(4, 1)),
        ValueError,
        r"checkpoint: it was trained with a different process\.\n  checkpoint: GaussianProcess\(num_steps=10.*\n  "
        r"this model: GaussianProcess\(num_steps=20",
    ),
    Case(
        "ckpt-transition",
        "fit(absorbing model, ckpt_path=checkpoint of a uniform model)",
        lambda tmp: _resume_mismatch(tmp, _token_module("uniform"), _token_module("absorbing"), IDS.repeat(4, 1)),
        ValueError,
        r"checkpoint: it was trained with a different process(.|\n)*transition='uniform'(.|\n)*transition='absorbing'",
    ),
    Case(
        "ckpt-schedule",
        "fit(linear-schedule model, ckpt_path=checkpoint of a cosine-schedule model)",
        lambda tmp: _resume_mismatch(
            tmp, _gauss_module(schedule="cosine"), _gauss_module(schedule="linear"), X.repeat(4, 1)
        ),
        ValueError,
        r"checkpoint: it was trained with a different process\.\n(.|\n)*  differs: process\.alpha_bar: same shape "
        r"\(11,\), different values",
    ),
    Case(
        "ckpt-matrix",
        "fit(model with transition matrices Q2, ckpt_path=checkpoint trained with Q1)",
        lambda tmp: _resume_mismatch(
            tmp,
            DiffusionModule(
                CategoricalProcess(K, T, _matrices(0.1)),
                TokenTransformer(K, K, 5, T, d_model=8, depth=1, heads=2),
                "x0",
                num_eval_samples=0,
            ),
            DiffusionModule(
                CategoricalProcess(K, T, _matrices(0.5)),
                TokenTransformer(K, K, 5, T, d_model=8, depth=1, heads=2),
                "x0",
                num_eval_samples=0,
            ),
            IDS.repeat(4, 1),
        ),
        ValueError,
        r"checkpoint: it was trained with a different process\.\n(.|\n)*  differs: process\.kernel\.Q: same shape "
        r"\(10, 4, 4\), different values",
    ),
    # -- time steps
    Case(
        "s-equals-t",
        "posterior(x_t, x0, t=2, s=2)",
        lambda tmp: gauss().posterior(X, X, 2, 2),
        ValueError,
        r"s: expected 0 <= s < t for a reverse jump, got s = 2 and t = 2",
    ),
    Case(
        "s-greater-t",
        "CategoricalProcess.posterior(x_t, x0, t=2, s=3)",
        lambda tmp: cat().posterior(IDS, IDS, 2, 3),
        ValueError,
        r"s: expected 0 <= s < t for a reverse jump",
    ),
    Case(
        "t-greater-T",
        "q_sample(x0, t=T+1)",
        lambda tmp: gauss().q_sample(X, T + 1),
        ValueError,
        r"t: expected values in 0\.\.T = 0\.\.10, got min 11, max 11",
    ),
    Case(
        "t-negative",
        "q_sample(x0, t=-1)",
        lambda tmp: cat().q_sample(IDS, -1),
        ValueError,
        r"t: expected values in 0\.\.T = 0\.\.10, got min -1, max -1",
    ),
    Case(
        "float-t-tensor",
        "q_sample(x0, t=float32 tensor)",
        lambda tmp: gauss().q_sample(X, torch.full((3,), 2.0)),
        TypeError,
        r"t: expected integer time steps \(int64\), got dtype torch\.float32",
    ),
    Case(
        "float-t-python",
        "q_sample(x0, t=2.0)",
        lambda tmp: gauss().q_sample(X, 2.0),
        TypeError,
        r"t: expected an int or an int64 tensor, got float",
    ),
    Case(
        "t-shape",
        "q_sample(x0 of batch 3, t of shape (4,))",
        lambda tmp: gauss().q_sample(X, torch.full((4,), 2)),
        ValueError,
        r"t: expected shape \(3,\) to match the batch, got \(4,\)",
    ),
    # -- schedules
    Case(
        "beta-zero",
        "GaussianProcess(3, betas=[0, 0.1, 0.2])",
        lambda tmp: GaussianProcess(3, [0.0, 0.1, 0.2]),
        ValueError,
        r"betas: expected every beta_t in the open interval \(0, 1\), got beta_1 = 0\.0",
    ),
    Case(
        "beta-one",
        "CategoricalProcess(4, 3, schedule=[0.1, 1.0, 0.2])",
        lambda tmp: CategoricalProcess(K, 3, schedule=[0.1, 1.0, 0.2]),
        ValueError,
        r"betas: expected every beta_t in the open interval \(0, 1\), got beta_2 = 1\.0",
    ),
    Case(
        "beta-nan",
        "NoiseSchedule.from_betas([nan, 0.1])",
        lambda tmp: NoiseSchedule.from_betas([float("nan"), 0.1]),
        ValueError,
        r"betas: expected every beta_t in the open interval \(0, 1\), got beta_1 = nan",
    ),
    Case(
        "schedule-name",
        "GaussianProcess(3, schedule='quadratic')",
        lambda tmp: GaussianProcess(3, "quadratic"),
        ValueError,
        r"schedule: unknown name 'quadratic'; expected one of \['cosine', 'linear'\]",
    ),
    Case(
        "schedule-length",
        "GaussianProcess(3, betas of length 2)",
        lambda tmp: GaussianProcess(3, [0.1, 0.2]),
        ValueError,
        r"schedule: has T = 2 steps but num_steps = 3",
    ),
    Case(
        "alpha-bar-increasing",
        "NoiseSchedule.from_alpha_bar([1, 0.5, 0.6])",
        lambda tmp: NoiseSchedule.from_alpha_bar([1, 0.5, 0.6]),
        ValueError,
        r"alpha_bar: expected a strictly decreasing table .*alpha_bar\[2\] = 0\.6 >= alpha_bar\[1\] = 0\.5",
    ),
    Case(
        "alpha-bar-start",
        "NoiseSchedule.from_alpha_bar([0.9, 0.5])",
        lambda tmp: NoiseSchedule.from_alpha_bar([0.9, 0.5]),
        ValueError,
        r"alpha_bar: expected alpha_bar\[0\] = 1 \(t = 0 is clean data\), got 0\.9",
    ),
    Case(
        "alpha-bar-T-zero-gaussian",
        "GaussianProcess(2, alpha_bar=[1, 0.5, 0])",
        lambda tmp: GaussianProcess(2, NoiseSchedule.from_alpha_bar([1, 0.5, 0.0])),
        ValueError,
        r"schedule: a Gaussian process needs alpha_bar_T > 0",
    ),
    Case(
        "betas-underflow",
        "NoiseSchedule.from_betas([0.999] * 300) (every beta valid)",
        lambda tmp: NoiseSchedule.from_betas([0.999] * 300),
        ValueError,
        r"alpha_bar: the product of \(1 - beta_t\) from the given betas underflows float64 to 0 at t = 108 of T = "
        r"300 .*use smaller betas or fewer steps",
    ),
    Case(
        "alpha-bar-T-below-float32-gaussian",
        "GaussianProcess(3, alpha_bar=[1, 0.5, 1e-20, 1e-50])",
        lambda tmp: GaussianProcess(3, NoiseSchedule.from_alpha_bar([1.0, 0.5, 1e-20, 1e-50])),
        ValueError,
        r"schedule: alpha_bar_T = 1e-50 is below float32's smallest normal number 1\.18e-38",
    ),
    Case(
        "num-steps-zero",
        "GaussianProcess(num_steps=0)",
        lambda tmp: GaussianProcess(0),
        ValueError,
        r"num_steps: expected T >= 1, got 0",
    ),
    Case(
        "num-steps-float",
        "CategoricalProcess(4, num_steps=10.0)",
        lambda tmp: CategoricalProcess(K, 10.0),
        TypeError,
        r"num_steps: expected an int, got float",
    ),
    # -- sampling
    Case(
        "sample-steps-zero",
        "sample(..., num_steps=0)",
        lambda tmp: sample(gauss(), MLPDenoiser(2, T), (3, 2), "eps", num_steps=0),
        ValueError,
        r"num_steps: expected 1 <= number of sampling steps <= T = 10, got 0",
    ),
    Case(
        "sample-steps-above-T",
        "sample(..., num_steps=T+1)",
        lambda tmp: sample(gauss(), MLPDenoiser(2, T), (3, 2), "eps", num_steps=T + 1),
        ValueError,
        r"num_steps: expected 1 <= number of sampling steps <= T = 10, got 11",
    ),
    Case(
        "sample-steps-float",
        "sample(..., num_steps=5.0)",
        lambda tmp: sample(gauss(), MLPDenoiser(2, T), (3, 2), "eps", num_steps=5.0),
        ValueError,
        r"num_steps: expected 1 <= number of sampling steps <= T = 10, got 5\.0",
    ),
    Case(
        "module-sample-steps-zero",
        "DiffusionModule.sample(4, num_steps=0)",
        lambda tmp: _gauss_module().sample(4, num_steps=0, shape_like=X),
        ValueError,
        r"num_steps: expected 1 <= number of sampling steps <= T = 10, got 0",
    ),
    Case(
        "previous-step-stride",
        "sample(parametrization='previous-step', num_steps=5 < T)",
        lambda tmp: sample(gauss(), MLPDenoiser(2, T), (3, 2), "previous-step", num_steps=5),
        ValueError,
        r"parametrization 'previous-step' predicts p\(x_\{t-1\} \| x_t\) directly and cannot jump",
    ),
    Case(
        "s-equals-t-tensor",
        "posterior(x_t, x0, t=tensor 2, s=tensor 2)",
        lambda tmp: gauss().posterior(X, X, torch.full((3,), 2), torch.full((3,), 2)),
        ValueError,
        r"s: expected 0 <= s < t for a reverse jump, got s = \[2, 2, 2\] and t = \[2, 2, 2\]",
    ),
    Case(
        "timesteps-not-from-T",
        "sample(timesteps=[5, 2, 0]) with T = 10",
        lambda tmp: sample(gauss(), MLPDenoiser(2, T), (3, 2), "eps", timesteps=[5, 2, 0]),
        ValueError,
        r"timesteps: expected a strictly decreasing list of ints from T = 10 down to 0, got \[5, 2, 0\]",
    ),
    Case(
        "eta-categorical",
        "CategoricalProcess.reverse(..., eta=0.0)",
        lambda tmp: cat().reverse(torch.zeros(3, 5, K), IDS, 2, eta=0.0),
        ValueError,
        r"eta: DDIM's eta applies to Gaussian fields only",
    ),
    Case(
        "eta-negative",
        "GaussianProcess.reverse(..., eta=-1)",
        lambda tmp: gauss().reverse(torch.zeros(3, 2), X, 2, eta=-1.0),
        ValueError,
        r"eta: expected eta >= 0, got -1\.0",
    ),
    # -- marginal transition
    Case(
        "marginal-without-marginals",
        "CategoricalProcess(4, 10, 'marginal').q_sample(...) with no marginals",
        lambda tmp: cat("marginal").q_sample(IDS, 2),
        ValueError,
        r"marginals: transition='marginal' needs class frequencies; pass marginals=\[\.\.\.\] or let DiffusionModule "
        r"fill them",
    ),
    Case(
        "marginal-prior-without-marginals",
        "CategoricalProcess(..., 'marginal').prior_sample(...) with no marginals",
        lambda tmp: cat("marginal").prior_sample((3, 5)),
        ValueError,
        r"marginals: transition='marginal' needs class frequencies",
    ),
    Case(
        "marginals-length",
        "CategoricalProcess(4, 10, 'marginal', marginals=[1, 2, 3])",
        lambda tmp: CategoricalProcess(K, T, "marginal", marginals=[1, 2, 3]),
        ValueError,
        r"marginals: expected 4 class frequencies, got 3",
    ),
    Case(
        "marginals-zero",
        "CategoricalProcess(4, 10, 'marginal', marginals=[0, 0, 0, 0])",
        lambda tmp: CategoricalProcess(K, T, "marginal", marginals=[0, 0, 0, 0]),
        ValueError,
        r"marginals: expected non-negative finite frequencies with a positive sum, got \[0\.0, 0\.0, 0\.0, 0\.0\]",
    ),
    Case(
        "marginals-for-uniform",
        "CategoricalProcess(4, 10, 'uniform', marginals=[...])",
        lambda tmp: CategoricalProcess(K, T, "uniform", marginals=[1, 2, 3, 4]),
        ValueError,
        r"marginals: only used with transition='marginal', got transition='uniform'",
    ),
    Case(
        "matrix-not-stochastic",
        "CategoricalProcess(3, 2, transition=(2, 3, 3) matrices with rows summing to 1.5)",
        lambda tmp: CategoricalProcess(3, 2, torch.full((2, 3, 3), 0.5)),
        ValueError,
        r"transition: every row of Q_t must sum to 1 \(row-vector convention\), max deviation 5\.00e-01",
    ),
    # -- probabilities given as x0 to posterior()
    Case(
        "posterior-nan-probs",
        "CategoricalProcess.posterior(x_t, x0 = probabilities full of NaN)",
        lambda tmp: cat().posterior(IDS, torch.full((3, 5, K), float("nan")), 2),
        ValueError,
        r"x0: expected probabilities over the 4 classes in the last dim, found NaN or inf \(not finite\)",
    ),
    Case(
        "posterior-unnormalized-probs",
        "CategoricalProcess.posterior(x_t, x0 = rows summing to 2, some < 0)",
        lambda tmp: cat().posterior(IDS, torch.tensor([1.5, -0.5, 0.5, 0.5]).expand(3, 5, K), 2),
        ValueError,
        r"x0: expected probabilities >= 0 in the last dim, found a negative value -0\.5",
    ),
    Case(
        "posterior-probs-sum",
        "CategoricalProcess.posterior(x_t, x0 = non-negative rows summing to 2)",
        lambda tmp: cat().posterior(IDS, torch.full((3, 5, K), 0.5), 2),
        ValueError,
        r"x0: expected probabilities whose rows \(last dim\) sum to 1 within 1\.0e-04, found sums from 2 to 2",
    ),
    Case(
        "posterior-unreachable-x_t",
        "absorbing posterior(x_t = 1 (unmasked), x0 = 0): q(x_t | x0) = 0",
        lambda tmp: cat("absorbing").posterior(
            torch.ones(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long), 2
        ),
        ValueError,
        r"x_t: id 1 at index \(0, 0\) cannot come from x0 = 0 at t = 2 \(q\(x_t \| x0\) = 0 under "
        r"transition='absorbing'",
    ),
]

# What each case actually raised, for the printed table (filled as the tests run).
OBSERVED: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    quiet_lightning()
    yield
    print("\n\nBad inputs: input -> expected exception: /message regex/ (then what it raised in this run).")
    print("[xfail] marks a missing guard or a misleading message today (see the case's bug text).")
    for c in CASES:
        tag = " [xfail]" if c.bug else ""
        print(f"- {c.input}{tag}\n    -> {c.error.__name__}: /{c.match}/")
        if c.id in OBSERVED:
            print(f"    got {OBSERVED[c.id]}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if "DID NOT RAISE" in text:
        return "(no error)"
    if text.startswith("Regex pattern did not match"):
        found = re.search(r"(?:Actual message|Input): '?(.*)", text)
        message = found.group(1).rstrip("'") if found else text
        return f"(other message) {message[:200]}"
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {c.bug}")] if c.bug else []
        yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input_is_named(case: Case, tmp_path: Path) -> None:
    try:
        with pytest.raises(case.error, match=case.match) as info:
            case.run(tmp_path)
    except BaseException as exc:  # record what happened instead, then fail as pytest would
        OBSERVED[case.id] = _describe(exc)
        raise
    OBSERVED[case.id] = f"{info.type.__name__}: {str(info.value).splitlines()[0][:200]}"
