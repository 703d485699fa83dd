"""Noise schedules: the alpha_bar table (T + 1 entries, float64, alpha_bar[0] = 1, strictly
decreasing) against the formulas of Ho et al. 2020 (linear betas) and Nichol & Dhariwal 2021
eq. 17 (cosine), and the errors for invalid tables."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit import CategoricalProcess, GaussianProcess, NoiseSchedule
from diffkit.processes.schedules import cosine_alpha_bar, linear_betas, make_schedule

# One intra-op thread: see conftest.single_thread.
pytestmark = pytest.mark.usefixtures("single_thread")

STEP_COUNTS = [1, 2, 3, 10, 50, 1000, 4000]


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", STEP_COUNTS)
def test_table_shape_dtype_start_and_monotone(name: str, T: int) -> None:
    sched = make_schedule(name, T)
    ab = sched.alpha_bar
    assert sched.num_steps == T
    assert ab.shape == (T + 1,)
    assert ab.dtype == torch.float64
    assert ab[0].item() == 1.0  # exactly: t = 0 is clean data
    assert bool((ab[1:] < ab[:-1]).all()), "alpha_bar must be strictly decreasing"
    assert bool((ab >= 0).all()) and bool((ab <= 1).all())
    betas = sched.betas
    assert betas.shape == (T,) and betas.dtype == torch.float64
    assert bool((betas > 0).all()) and bool((betas < 1).all())


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [50, 1000])
def test_table_ends_near_the_prior(name: str, T: int) -> None:
    # Both schedules are designed so q(x_T | x0) has almost no signal left.
    assert make_schedule(name, T).alpha_bar[-1].item() < 1e-3


def test_linear_matches_ddpm_betas_at_T_1000() -> None:
    # Ho et al. 2020 sec. 4: beta_t linear from 1e-4 to 0.02 over T = 1000 steps.
    T = 1000
    sched = NoiseSchedule.linear(T)
    expected_betas = torch.tensor([1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)], dtype=torch.float64)
    # 1e-15: both sides are a single float64 affine expression per entry.
    torch.testing.assert_close(linear_betas(T), expected_betas, rtol=0, atol=1e-15)
    # Recovering beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} from the table divides two numbers that
    # have each accumulated ~t roundings: relative error <= ~1e-13 for t <= 1000.
    torch.testing.assert_close(sched.betas, expected_betas, rtol=1e-10, atol=1e-14)
    prod, expected = 1.0, [1.0]
    for b in expected_betas.tolist():
        prod *= 1 - b
        expected.append(prod)
    # 1e-12 relative: a product of 1000 factors each rounded once (~1000 * 1.1e-16).
    torch.testing.assert_close(sched.alpha_bar, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("T", [5, 64, 1000])
def test_linear_scaling_for_other_T(T: int) -> None:
    # Nichol & Dhariwal 2021: for T != 1000 the linear betas are scaled by 1000 / T.
    scale = 1000 / T
    lo, hi = 1e-4 * scale, min(0.02 * scale, 0.999)
    expected = torch.tensor([lo + (hi - lo) * i / (T - 1) for i in range(T)], dtype=torch.float64)
    torch.testing.assert_close(linear_betas(T), expected, rtol=0, atol=1e-15)  # one affine expression each


@pytest.mark.parametrize("T", [10, 100, 1000])
def test_cosine_matches_nichol_dhariwal_eq17(T: int) -> None:
    offset = 0.008

    def f(t: int) -> float:
        return math.cos((t / T + offset) / (1 + offset) * math.pi / 2) ** 2

    ab = cosine_alpha_bar(T)
    # First t whose unclipped beta exceeds max_beta = 0.999: from there on the table departs from eq. 17.
    clipped = [t for t in range(1, T + 1) if 1 - f(t) / f(t - 1) > 0.999]
    first_clipped = clipped[0] if clipped else T + 1
    assert first_clipped == T, "with offset 0.008 only the very last beta is clipped"
    for t in range(first_clipped):
        # 1e-12 relative: the table is a cumulative product of t <= 1000 float64 ratios.
        assert ab[t].item() == pytest.approx(f(t) / f(0), rel=1e-12, abs=0), f"t = {t}"
    # At the clipped end: alpha_bar_T = alpha_bar_{T-1} (1 - 0.999) exactly by construction.
    assert ab[T].item() == pytest.approx(ab[T - 1].item() * (1 - 0.999), rel=1e-12)


def test_from_betas_reproduces_cumprod(gen: torch.Generator) -> None:
    betas = torch.rand(37, generator=gen, dtype=torch.float64) * 0.2 + 1e-3
    sched = NoiseSchedule.from_betas(betas)
    expected = [1.0]
    for b in betas.tolist():
        expected.append(expected[-1] * (1 - b))
    # 1e-13 relative: 37 roughly-rounded products, evaluated in a different order.
    torch.testing.assert_close(sched.alpha_bar, torch.tensor(expected, dtype=torch.float64), rtol=1e-13, atol=0)
    torch.testing.assert_close(sched.betas, betas, rtol=1e-11, atol=1e-15)  # ratio of two ~1e-15-relative products
    # A list of betas is accepted by the processes too, and gives the same table.
    proc = GaussianProcess(37, schedule=betas.tolist())
    assert torch.equal(proc.alpha_bar, sched.alpha_bar)


@pytest.mark.parametrize(
    "betas, needle",
    [
        ([0.1, 1.0], "beta_2"),
        ([0.0, 0.1], "beta_1"),
        ([0.1, -0.2], "beta_2"),
        ([0.1, 1.5], "beta_2"),
        ([0.1, float("nan")], "beta_2"),
        ([], "betas"),
    ],
)
def test_from_betas_rejects_invalid(betas: list[float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        NoiseSchedule.from_betas(betas)


@pytest.mark.parametrize(
    "table, needle",
    [
        ([1.0, 0.5, 0.6], "strictly decreasing"),
        ([1.0, 0.5, 0.5], "strictly decreasing"),
        ([0.9, 0.5, 0.1], r"alpha_bar\[0\]"),
        ([1.0, float("nan"), 0.1], "NaN"),
        ([1.0], "T \\+ 1 >= 2"),
        ([1.0, 0.5, -0.1], r"\[0, 1\]"),
    ],
)
def test_alpha_bar_table_rejects_invalid(table: list[float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        NoiseSchedule.from_alpha_bar(table)


@pytest.mark.parametrize("T", [0, -3])
def test_num_steps_below_one_raises(T: int) -> None:
    for build in (NoiseSchedule.linear, NoiseSchedule.cosine, linear_betas, cosine_alpha_bar):
        with pytest.raises(ValueError, match="num_steps"):
            build(T)
    with pytest.raises(ValueError, match="num_steps"):
        make_schedule("cosine", T)
    with pytest.raises(ValueError, match="num_steps"):
        GaussianProcess(T)
    with pytest.raises(ValueError, match="num_steps"):
        CategoricalProcess(3, T)


def test_non_int_num_steps_raises_type_error() -> None:
    with pytest.raises(TypeError, match="num_steps"):
        make_schedule("linear", 10.0)  # type: ignore[arg-type]


def test_unknown_schedule_name_lists_valid_names() -> None:
    for build in (
        lambda: make_schedule("quadratic", 10),
        lambda: GaussianProcess(10, schedule="quadratic"),
        lambda: CategoricalProcess(3, 10, schedule="quadratic"),
    ):
        with pytest.raises(ValueError) as info:
            build()
        msg = str(info.value)
        assert "quadratic" in msg and "linear" in msg and "cosine" in msg, msg


def test_schedule_length_must_match_num_steps() -> None:
    with pytest.raises(ValueError, match="num_steps"):
        make_schedule(NoiseSchedule.linear(10), 20)
    with pytest.raises(ValueError, match="num_steps"):
        GaussianProcess(5, schedule=[0.1, 0.2, 0.3])
