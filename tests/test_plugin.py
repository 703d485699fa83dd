"""The example plug-in (examples/plugins): a user's own forward process, with its own math, run by
diffkit unchanged.

Nothing is installed: the package is put on sys.path, and the entry points that `pip install`
would register are read from its pyproject.toml. References are written plainly here: 2 x 2
flip matrices multiplied out and Bayes' rule by enumeration.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path
from types import ModuleType

import pytest
import torch

import diffkit.cli
from diffkit.processes import ForwardProcess
from diffkit.testing import check_process

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugins"
CONFIG = PLUGIN / "bitflip.yaml"


@pytest.fixture
def bitflip(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The plug-in package, importable as it would be once installed."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    import diffkit_bitflip

    return diffkit_bitflip


@pytest.fixture
def float64() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def default_dtype(request) -> Iterator[torch.dtype]:
    """float64 for the exact identities; float32 is what training uses."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    try:
        yield request.param
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: torch's thread pool only adds waiting on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def plugin_entry_points() -> EntryPoints:
    """The `diffkit.plugins` entry points that installing the package would register."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    group = project["entry-points"][diffkit.cli.PLUGIN_GROUP]
    return EntryPoints(EntryPoint(name, value, diffkit.cli.PLUGIN_GROUP) for name, value in group.items())


def flip_matrix(beta: float) -> torch.Tensor:
    """Q[i, j] = q(x_t = j | x_{t-1} = i) for one step flipping with probability beta."""
    return torch.tensor([[1 - beta, beta], [beta, 1 - beta]], dtype=torch.float64)


def product(betas: torch.Tensor) -> torch.Tensor:
    out = torch.eye(2, dtype=torch.float64)
    for beta in betas.tolist():
        out = out @ flip_matrix(beta)
    return out


# ------------------------------------------------------------------------------ the process
@pytest.mark.parametrize("T", [1, 10, 100])
def test_check_process_passes(bitflip, default_dtype, one_thread, T: int) -> None:
    x0 = torch.randint(0, 2, (3, 8), generator=torch.Generator().manual_seed(T))
    check_process(bitflip.BitFlipProcess(num_steps=T), x0)


def test_check_process_passes_for_custom_flips_and_any_shape(bitflip, float64, one_thread) -> None:
    process = bitflip.BitFlipProcess(num_steps=4, flip_probs=[0.1, 0.2, 0.3, 0.4])
    check_process(process, torch.randint(0, 2, (2, 3, 4), generator=torch.Generator().manual_seed(0)))


def test_cosine_schedule_ends_at_the_prior(bitflip, float64) -> None:
    process = bitflip.BitFlipProcess(num_steps=50)
    beta = process.flip_probs
    assert beta.dtype == torch.float64 and ((beta > 0) & (beta <= 0.5)).all()
    assert torch.allclose(process.r, torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - 2 * beta, 0)]))
    x0 = torch.randint(0, 2, (4, 16))
    assert torch.equal(process.marginal(x0, 50), torch.full((4, 16, 2), 0.5))  # r_T = 0: q(x_T | x0) = Bernoulli(1/2)
    assert process.prior_term(x0).abs().max() < 1e-12
    assert not any(name.startswith(("r", "flip")) for name in process.state_dict())  # derived, not saved


@pytest.mark.parametrize("flip_probs", [None, [0.05, 0.3, 0.1, 0.45, 0.2, 0.5]], ids=["cosine", "custom"])
def test_posterior_matches_brute_force_bayes(bitflip, float64, flip_probs) -> None:
    process = bitflip.BitFlipProcess(num_steps=6, flip_probs=flip_probs)
    beta = process.flip_probs
    # every (x0, x_t) pair, one per batch row
    x0 = torch.tensor([0, 0, 1, 1]).unsqueeze(1)  # (4, 1)
    x_t = torch.tensor([0, 1, 0, 1]).unsqueeze(1)
    p_x0 = torch.tensor([0.9, 0.3, 0.5, 0.02])  # a p(x0 = 1) per row, for the mixture
    x0_probs = torch.stack([1 - p_x0, p_x0], -1).unsqueeze(1)  # (4, 1, 2)
    for t, s in [(1, 0), (2, 1), (6, 5), (6, 0), (5, 2), (4, 3)]:
        Qbar_s, Qbar_t, Q_ts = product(beta[:s]), product(beta[:t]), product(beta[s:t])
        assert torch.allclose(process.marginal(x0, t)[:, 0], Qbar_t[x0[:, 0]])
        assert torch.allclose(process.transition(x0, t, s)[:, 0], Q_ts[x0[:, 0]])
        for row in range(4):
            a, b = int(x0[row]), int(x_t[row])
            bayes = Qbar_s[a] * Q_ts[:, b]  # q(x_s | x0) q(x_t | x_s) over x_s
            bayes = bayes / bayes.sum()
            got = process.posterior(x_t, x0, t, s)[row, 0]
            assert torch.allclose(got, bayes, atol=1e-12), (t, s, a, b)
            mixture = sum(
                x0_probs[row, 0, j] * (Qbar_s[j] * Q_ts[:, b]) / (Qbar_s[j] * Q_ts[:, b]).sum() for j in range(2)
            )
            assert torch.allclose(process.posterior(x_t, x0_probs, t, s)[row, 0], mixture, atol=1e-12), (t, s, row)


def test_elbo_of_the_exact_denoiser_is_one_bit_for_uniform_bits(bitflip, one_thread) -> None:
    """For i.i.d. Bernoulli(1/2) bits, q(x0 | x_t) is proportional to q(x_t | x0); a denoiser giving it
    exactly makes the derived reverse chain the true one, so the bound equals -log2 q(x0) = 1 bit
    per element in expectation (checked to ~4 standard errors of the Monte Carlo estimate)."""
    from diffkit import nll_bound

    process = bitflip.BitFlipProcess(num_steps=20)

    def exact_x0_logits(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r_t = process.r[t].reshape(-1, 1, 1).float()
        return (r_t * torch.nn.functional.one_hot(x_t, 2) + (1 - r_t) / 2).log()  # log q(x_t | x0 = k), (B2)

    x0 = torch.randint(0, 2, (256, 16), generator=torch.Generator().manual_seed(0))
    bound = nll_bound(process, exact_x0_logits, x0, "x0", generator=torch.Generator().manual_seed(1))
    assert abs(bound.bits_per_element.mean().item() - 1.0) < 0.06
    assert bound.prior.abs().max() < 1e-6


def test_q_sample_noise_is_the_uniform_draws(bitflip) -> None:
    process = bitflip.BitFlipProcess(num_steps=10)
    x0 = torch.randint(0, 2, (5, 16))
    u = torch.rand(5, 16)
    x_t, noise = process.q_sample(x0, 7, noise=u)
    assert noise is u and x_t.dtype == torch.long
    assert torch.equal(x_t != x0, u.double() < (1 - process.r[7]) / 2)


def test_bad_inputs_name_the_argument(bitflip) -> None:
    process = bitflip.BitFlipProcess(num_steps=10)
    with pytest.raises(TypeError, match=r"x0: expected int64 bits in \{0, 1\}, got dtype torch.float32"):
        process.validate_x0(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="batch: .*torch.bool"):
        process.validate_x0(torch.zeros(2, 3, dtype=torch.bool), "batch")
    with pytest.raises(ValueError, match=r"x0: expected bits in \{0, 1\}, found values in \[0, 2\]"):
        process.q_sample(torch.tensor([[0, 2]]), 1)
    with pytest.raises(ValueError, match="x0: probabilities need a last dim of 2"):
        process.posterior(torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3, 3), 1 / 3), 2)
    with pytest.raises(ValueError, match=r"noise: expected uniform draws of shape \(2, 3\)"):
        process.q_sample(torch.zeros(2, 3, dtype=torch.long), 1, noise=torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"s: expected 0 <= s < t"):
        process.posterior(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 3, 3)
    with pytest.raises(ValueError, match="flip_probs: expected 3 values"):
        bitflip.BitFlipProcess(num_steps=3, flip_probs=[0.1, 0.2])
    with pytest.raises(ValueError, match="flip_probs: expected values in"):
        bitflip.BitFlipProcess(num_steps=2, flip_probs=[0.5, 0.2])
    with pytest.raises(ValueError, match="eta: "):
        process.reverse_from_x0(
            torch.zeros(1, 2, dtype=torch.long),
            torch.full((1, 2, 2), 0.5),
            torch.tensor([2]),
            torch.tensor([1]),
            eta=0.0,
        )


def test_binary_patterns_are_seeded_bits(bitflip) -> None:
    dm = bitflip.BinaryPatternsDataModule(num_train=256, num_val=32, batch_size=64, seed=3)
    x = dm.split("train")
    assert x.shape == (256, 16) and x.dtype == torch.long and set(x.unique().tolist()) <= {0, 1}
    assert torch.equal(
        x, bitflip.BinaryPatternsDataModule(num_train=256, num_val=32, batch_size=64, seed=3).split("train")
    )
    nearest = (x[:, None, :] != dm.prototypes[None]).sum(-1).min(1).values  # Hamming distance to a prototype
    assert nearest.float().mean() < 2  # about 16 * 0.05 bits of noise
    with pytest.raises(ValueError, match="bit_noise"):
        bitflip.BinaryPatternsDataModule(bit_noise=0.5)


# ------------------------------------------------------------------------------ packaging and CLI
def test_entry_points_load_the_plugin_classes(bitflip) -> None:
    from lightning.pytorch import LightningDataModule

    loaded = {ep.name: ep.load() for ep in plugin_entry_points()}
    assert loaded == {
        "BitFlipProcess": bitflip.BitFlipProcess,
        "BinaryPatternsDataModule": bitflip.BinaryPatternsDataModule,
    }
    assert issubclass(loaded["BitFlipProcess"], ForwardProcess)
    assert issubclass(loaded["BinaryPatternsDataModule"], LightningDataModule)


def test_config_fits_checkpoints_and_samples(
    bitflip, one_thread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after `pip install -e examples/plugins`: the CLI finds the classes through the entry points,
    # so the config's short names resolve.
    monkeypatch.setattr(
        diffkit.cli,
        "entry_points",
        lambda group: plugin_entry_points() if group == diffkit.cli.PLUGIN_GROUP else EntryPoints(()),
    )
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        "--config",
        str(CONFIG),
        "--trainer.max_steps=5",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.callbacks.init_args.dirpath={tmp_path / 'checkpoints'}",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--model.num_eval_samples=16",
        "--data.init_args.num_train=64",
        "--data.init_args.num_val=32",
        "--data.init_args.batch_size=16",
    ]
    monkeypatch.setattr(sys, "argv", ["diffkit"])  # pytest's own arguments must not reach the CLI
    diffkit.cli.main(args)

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 5
    assert state["hyper_parameters"]["process"]["class_path"] == "diffkit_bitflip.BitFlipProcess"
    metrics = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/nll_bits_per_element" in metrics

    samples = diffkit.cli.sample_from_checkpoint(
        ckpt, num_samples=16, plot=None, output=tmp_path / "s.pt", progress=False
    )
    assert samples.shape == (16, 16) and samples.dtype == torch.long
    assert set(samples.unique().tolist()) <= {0, 1}
    strided = diffkit.cli.sample_from_checkpoint(
        ckpt, num_samples=4, num_steps=5, plot=None, output=tmp_path / "s5.pt", progress=False
    )
    assert strided.shape == (4, 16) and set(strided.unique().tolist()) <= {0, 1}
