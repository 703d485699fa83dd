"""Property tests (hypothesis): the forward-process laws hold for random K, T, schedules,
transitions and shapes, not just for the hand-picked cases of the other files.

Laws checked, each against the library's own primitives composed differently (so a bug in one
primitive shows up as a disagreement):

* posterior rows q(x_s | x_t, x0) are distributions (>= 0, sum to 1) for any s < t, with x_t
  drawn from q(x_t | x0), and equal Bayes' rule written with ``marginal`` and ``transition``:
  q(x_s | x_t, x0) = q(x_s | x0) q(x_t | x_s) / q(x_t | x0);
* Chapman-Kolmogorov: q(x_t | x0) = sum_{x_s} q(x_s | x0) q(x_t | x_s) (categorical), and for
  Gaussians mean_t = sqrt(alpha_{t|s}) mean_s, var_t = alpha_{t|s} var_s + 1 - alpha_{t|s};
* ``q_sample`` lands in the support: ids in [0, num_states) with q(x_t | x0) > 0 (the mask id is a
  valid x_t under absorbing noise, never a valid x0);
* the Gaussian posterior variance lies in [0, 1 - alpha_{t|s}];
* ProductProcess never noises padding, keeps symmetric fields symmetric (and their diagonal), and
  padding adds nothing to the loss.

The law tests draw betas in [1e-4, 0.1], so alpha_bar stays within float32's range; betas drawn
anywhere in the open interval (0, 1) are ``test_any_betas_in_the_open_unit_interval_keep_posteriors_finite``:
every process built from them has finite posteriors and losses in float32, and the only schedules
refused are Gaussian ones whose alpha_bar_T is below float32's smallest normal number (sqrt(alpha_bar_T)
would be 0 in float32), with a message saying so. ``-m slow`` runs more examples.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from diffkit import CategoricalProcess, GaussianProcess, NoiseSchedule, ProductProcess

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
SLOW = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# float32 rows of <= 13 terms: a few eps of rounding.
ATOL32 = 2e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------ strategies
@st.composite
def schedules(draw, T: int):
    kind = draw(st.sampled_from(["linear", "cosine", "betas"]))
    if kind != "betas":
        return kind
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    lo, hi = 1e-4, 0.1
    betas = lo + (hi - lo) * torch.rand(T, generator=g, dtype=torch.float64)
    return NoiseSchedule.from_betas(betas)


def random_matrices(T: int, K: int, seed: int) -> torch.Tensor:
    """(T, K, K) random row-stochastic matrices with some exact zeros (plus a kept diagonal)."""
    g = torch.Generator().manual_seed(seed)
    R = torch.rand(T, K, K, generator=g, dtype=torch.float64)
    R = torch.where(R < 0.4, torch.zeros_like(R), R) + 0.05 * torch.eye(K, dtype=torch.float64)
    R = R / R.sum(-1, keepdim=True)
    lam = torch.rand(T, 1, 1, generator=g, dtype=torch.float64) * 0.5
    return (1 - lam) * torch.eye(K, dtype=torch.float64) + lam * R


@st.composite
def categorical_processes(draw, max_T: int = 300):
    K = draw(st.integers(2, 12))
    T = draw(st.integers(1, max_T))
    kind = draw(st.sampled_from(["uniform", "absorbing", "marginal", "matrix"]))
    if kind == "matrix":
        # K x K products per (s, t) pair: keep T moderate so an example stays fast.
        T = min(T, 60)
        return CategoricalProcess(K, T, random_matrices(T, K, draw(st.integers(0, 2**31 - 1))))
    schedule = draw(schedules(T))
    marginals = None
    if kind == "marginal":
        freqs = draw(st.lists(st.floats(0.0, 1.0), min_size=K, max_size=K).filter(lambda f: sum(f) > 1e-3))
        marginals = torch.tensor(freqs, dtype=torch.float64)
    return CategoricalProcess(K, T, kind, schedule, marginals=marginals)


@st.composite
def time_pairs(draw, T: int, B: int):
    """(t, s) as (B,) int64 with 0 <= s < t <= T, different per example."""
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, T + 1, (B,), generator=g)
    s = (torch.rand(B, generator=g) * t).long().clamp_max(t - 1)
    return t, s


shapes = st.sampled_from([(3,), (2, 5), (2, 3, 4)])


# ------------------------------------------------------------------------------ categorical
def _categorical_law_checks(proc: CategoricalProcess, shape, data) -> None:
    B, S = shape[0], proc.num_states
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    x0 = torch.randint(0, proc.num_classes, shape, generator=g)
    t, s = data.draw(time_pairs(proc.num_steps, B))

    # Support: x_t drawn from q(x_t | x0) has positive probability; ids in range.
    x_t = proc.q_sample(x0, t, generator=g).x_t
    assert x_t.shape == x0.shape and x_t.dtype == torch.long
    assert int(x_t.min()) >= 0 and int(x_t.max()) < S
    q_t = proc.marginal(x0, t)  # (B, ..., S)
    assert bool((q_t.gather(-1, x_t.unsqueeze(-1)) > 0).all()), "q_sample drew an x_t with q(x_t | x0) = 0"
    if proc.kind != "absorbing":
        assert int(x_t.max()) < proc.num_classes

    # Posterior rows are distributions.
    post = proc.posterior(x_t, x0, t, s)  # (B, ..., S)
    assert post.shape == (*shape, S)
    assert bool((post >= 0).all())
    torch.testing.assert_close(post.sum(-1), torch.ones(shape), rtol=0, atol=ATOL32)

    # At s = 0 the posterior is the point mass at x0 (never the mask), and so is the support of
    # the derived reverse step p(x_0 | x_t) for any network output: x0 ids are data classes only.
    at_data = s == 0
    if bool(at_data.any()):
        onehot = torch.nn.functional.one_hot(x0[at_data], S).to(post.dtype)
        torch.testing.assert_close(post[at_data], onehot, rtol=0, atol=ATOL32)
        logits = torch.randn(*shape, proc.num_classes, generator=g)
        rev = proc.reverse(logits, x_t, t, s)
        assert bool((rev[at_data][..., proc.num_classes :] == 0).all()), "p(x_0 | x_t) gives mass to the mask state"

    # Bayes with marginal and transition: q(x_s | x0) q(x_t | x_s) / q(x_t | x0).
    q_s = proc.marginal(x0, s)  # (B, ..., S)
    states = torch.arange(S)
    for b in range(B):
        # Q_{t|s}: row x_s is transition(x_s, t, s); one call with the S states as a batch.
        Q_ts = proc.transition(states.unsqueeze(1), int(t[b]), int(s[b]))[:, 0, :]  # (S, S)
        like = Q_ts[:, x_t[b]].movedim(0, -1)  # (..., S): q(x_t | x_s) over x_s
        joint = q_s[b] * like
        expected = joint / joint.sum(-1, keepdim=True)
        torch.testing.assert_close(post[b], expected, rtol=1e-4, atol=1e-5)
        # Chapman-Kolmogorov: q(x_t | x0) = q(x_s | x0) Q_{t|s}.
        torch.testing.assert_close(q_s[b] @ Q_ts, q_t[b], rtol=1e-4, atol=1e-5)


@FAST
@given(proc=categorical_processes(), shape=shapes, data=st.data())
def test_categorical_posterior_is_bayes_and_marginals_compose(proc, shape, data) -> None:
    _categorical_law_checks(proc, shape, data)


@pytest.mark.slow
@SLOW
@given(proc=categorical_processes(), shape=shapes, data=st.data())
def test_categorical_laws_long(proc, shape, data) -> None:
    _categorical_law_checks(proc, shape, data)


@FAST
@given(proc=categorical_processes(), data=st.data())
def test_mixture_posterior_with_probabilities_is_a_distribution(proc, data) -> None:
    """posterior(x_t, p(x0)) with a random p over the classes: rows are distributions, and
    equal the p-weighted mix of the one-hot posteriors over the x0 that can produce x_t."""
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    B, L, K = 3, 4, proc.num_classes
    x0 = torch.randint(0, K, (B, L), generator=g)
    t, s = data.draw(time_pairs(proc.num_steps, B))
    x_t = proc.q_sample(x0, t, generator=g).x_t
    # p(x0) puts mass on the true x0, so at least one consistent candidate has p > 0.
    p = torch.rand(B, L, K, generator=g) + 4 * torch.nn.functional.one_hot(x0, K)
    p = p / p.sum(-1, keepdim=True)
    mix = proc.posterior(x_t, p, t, s)
    assert bool((mix >= 0).all())
    torch.testing.assert_close(mix.sum(-1), torch.ones(B, L), rtol=0, atol=ATOL32)
    like_t = torch.stack(
        [proc.marginal(torch.full_like(x0, k), t).gather(-1, x_t.unsqueeze(-1)).squeeze(-1) for k in range(K)], -1
    )
    w = p * (like_t > 0)  # (B, L, K): candidates that can produce x_t
    w = w / w.sum(-1, keepdim=True)
    # Inconsistent candidates (like_t = 0) carry weight 0; posterior() refuses ids that cannot produce
    # x_t, so their rows are evaluated at the true x0 instead (any consistent id would do).
    expected = sum(
        w[..., k, None] * proc.posterior(x_t, torch.where(like_t[..., k] > 0, k, x0), t, s) for k in range(K)
    )
    torch.testing.assert_close(mix, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ gaussian
@st.composite
def gaussian_processes(draw):
    T = draw(st.integers(1, 300))
    return GaussianProcess(T, draw(schedules(T)), draw(st.sampled_from(["posterior", "forward"])))


def _gaussian_law_checks(proc: GaussianProcess, shape, data, dtype) -> None:
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    B = shape[0]
    x0 = torch.randn(shape, generator=g, dtype=dtype)
    t, s = data.draw(time_pairs(proc.num_steps, B))
    x_t = proc.q_sample(x0, t, generator=g).x_t
    assert x_t.shape == x0.shape and x_t.dtype == dtype and bool(torch.isfinite(x_t).all())

    ab = proc.alpha_bar  # float64 table
    alpha_ts = (ab[t] / ab[s]).to(dtype).reshape(B, *([1] * (len(shape) - 1)))
    post = proc.posterior(x_t, x0, t, s)
    eps = torch.finfo(dtype).eps
    assert bool(torch.isfinite(post.mean).all())
    assert bool((post.variance >= 0).all()), post.variance
    assert bool((post.variance <= (1 - alpha_ts) * (1 + 8 * eps) + 8 * eps).all()), (post.variance, 1 - alpha_ts)
    # s = 0 is the clean data: the posterior is the point mass at x0.
    zero = s == 0
    if bool(zero.any()):
        torch.testing.assert_close(post.mean[zero], x0[zero], rtol=0, atol=1e3 * eps)
        assert bool((post.variance[zero] <= 8 * eps).all())

    # Chapman-Kolmogorov for the Gaussian family.
    m_s, m_t = proc.marginal(x0, s), proc.marginal(x0, t)
    tr = proc.transition(m_s.mean, t, s)
    torch.testing.assert_close(tr.mean, m_t.mean, rtol=1e-5, atol=1e3 * eps)
    torch.testing.assert_close(alpha_ts * m_s.variance + tr.variance, m_t.variance, rtol=1e-5, atol=1e3 * eps)


@FAST
@given(proc=gaussian_processes(), shape=shapes, data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_gaussian_posterior_variance_and_marginals_compose(proc, shape, data, dtype) -> None:
    _gaussian_law_checks(proc, shape, data, dtype)


@pytest.mark.slow
@SLOW
@given(proc=gaussian_processes(), shape=shapes, data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_gaussian_laws_long(proc, shape, data, dtype) -> None:
    _gaussian_law_checks(proc, shape, data, dtype)


# ------------------------------------------------------------------------------ any betas in (0, 1)
@st.composite
def any_betas_processes(draw):
    """A Gaussian or mixing categorical process with T in 1..300 and betas anywhere in (0, 1);
    None for a Gaussian schedule the library refuses (alpha_bar_T below float32's range), after
    checking that it is refused with a message that says why."""
    T = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    betas = torch.rand(T, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    kind = draw(st.sampled_from(["gaussian", "uniform", "absorbing", "marginal"]))
    schedule = NoiseSchedule.from_betas(betas)
    if kind == "gaussian":
        if float(schedule.alpha_bar[-1]) < torch.finfo(torch.float32).tiny:
            with pytest.raises(
                ValueError, match=r"schedule: alpha_bar_T = .* is below float32's smallest normal number"
            ):
                GaussianProcess(T, schedule)
            return None
        return GaussianProcess(T, schedule)
    return CategoricalProcess(5, T, kind, schedule, marginals=[1.0, 2, 3, 4, 5] if kind == "marginal" else None)


# Generate only: no shrinking phase (nor hypothesis's patch file) in the fast run.
@settings(max_examples=40, deadline=None, derandomize=True, phases=[Phase.generate])
@given(proc=any_betas_processes())
def test_any_betas_in_the_open_unit_interval_keep_posteriors_finite(proc) -> None:
    if proc is None:  # refused at construction (checked in the strategy)
        return
    T, B = proc.num_steps, 4
    t = torch.tensor([T, T, max(T - 1, 1), 1])
    s = t - 1
    g = torch.Generator().manual_seed(0)
    if isinstance(proc, GaussianProcess):
        x0 = torch.randn(B, 3, generator=g)
        x_t = proc.q_sample(x0, t, generator=g).x_t
        post = proc.posterior(x_t, x0, t, s)
        assert bool(torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all()), post
        out = torch.randn(B, 3, generator=g)
    else:
        x0 = torch.randint(0, 5, (B, 3), generator=g)
        x_t = proc.q_sample(x0, t, generator=g).x_t
        post = proc.posterior(x_t, x0, t, s)
        torch.testing.assert_close(post.sum(-1), torch.ones(B, 3), rtol=0, atol=ATOL32)
        out = torch.randn(B, 3, 5, generator=g)
    name = "eps" if isinstance(proc, GaussianProcess) else "x0"
    assert bool(torch.isfinite(proc.loss(out, x0, x_t, t, None, name, kind="kl")).all())


# ------------------------------------------------------------------------------ product (graphs)
@st.composite
def graphs(draw):
    KX, KE = draw(st.integers(2, 6)), draw(st.integers(2, 4))
    T = draw(st.integers(1, 100))
    N = draw(st.integers(1, 7))
    sizes = draw(st.lists(st.integers(0, N), min_size=1, max_size=4))
    kinds = draw(
        st.tuples(
            st.sampled_from(["uniform", "absorbing", "marginal"]), st.sampled_from(["uniform", "absorbing", "marginal"])
        )
    )
    seed = draw(st.integers(0, 2**31 - 1))

    def field(K, kind):
        return CategoricalProcess(
            K, T, kind, marginals=torch.arange(1, K + 1, dtype=torch.float64) if kind == "marginal" else None
        )

    proc = ProductProcess({"X": field(KX, kinds[0]), "E": field(KE, kinds[1])}, symmetric=["E"])
    g = torch.Generator().manual_seed(seed)
    B = len(sizes)
    mask = torch.arange(N)[None, :] < torch.tensor(sizes)[:, None]  # (B, N)
    X = torch.randint(0, KX, (B, N), generator=g)  # padding holds arbitrary valid ids
    upper = torch.randint(0, KE, (B, N, N), generator=g).triu(1)
    diag = torch.randint(0, KE, (B, N), generator=g).diag_embed()
    E = upper + upper.transpose(1, 2) + diag
    return proc, {"X": X, "E": E, "mask": mask}, g


def _product_checks(proc, x0, g) -> None:
    mask = x0["mask"]
    pair = mask[:, :, None] & mask[:, None, :]
    for t in sorted({1, proc.num_steps // 2 or 1, proc.num_steps}):
        x_t = proc.q_sample(x0, t, generator=g).x_t
        assert torch.equal(x_t["mask"], mask)
        assert torch.equal(x_t["X"][~mask], x0["X"][~mask]), "a padded node was noised"
        assert torch.equal(x_t["E"][~pair], x0["E"][~pair]), "a padded edge was noised"
        assert torch.equal(x_t["E"], x_t["E"].transpose(1, 2)), "E_t is not symmetric"
        assert torch.equal(torch.diagonal(x_t["E"], dim1=1, dim2=2), torch.diagonal(x0["E"], dim1=1, dim2=2)), (
            "the diagonal was noised"
        )
        # A reverse step keeps the same invariants.
        B = mask.shape[0]
        tt = torch.full((B,), t)
        out = {
            f: torch.randn(p.get_parametrization("x0").output_shape(p, x_t[f]), generator=g)
            for f, p in proc.fields.items()
        }
        x_s = proc.step(out, x_t, tt, tt - 1, "x0", generator=g)
        assert torch.equal(x_s["X"][~mask], x0["X"][~mask])
        assert torch.equal(x_s["E"][~pair], x0["E"][~pair])
        assert torch.equal(x_s["E"], x_s["E"].transpose(1, 2))
        # Padding adds nothing to the loss: rewriting the outputs there changes nothing.
        loss = proc.loss(out, x0, x_t, tt, None, "x0", kind="hybrid")
        scrambled = {
            "X": torch.where(mask[..., None], out["X"], 50 * torch.randn(out["X"].shape, generator=g)),
            "E": torch.where(
                (pair & torch.ones_like(pair).triu(1))[..., None],
                out["E"],
                50 * torch.randn(out["E"].shape, generator=g),
            ),
        }
        torch.testing.assert_close(
            proc.loss(scrambled, x0, x_t, tt, None, "x0", kind="hybrid"), loss, rtol=1e-6, atol=1e-6
        )


@FAST
@given(case=graphs())
def test_product_never_noises_padding_and_keeps_edges_symmetric(case) -> None:
    _product_checks(*case)


@pytest.mark.slow
@SLOW
@given(case=graphs())
def test_product_laws_long(case) -> None:
    _product_checks(*case)
