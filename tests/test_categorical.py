"""CategoricalProcess against brute force: explicit K x K matrices built here
(Q_t = (1 - beta_t) I + beta_t 1 pi^T, Qbar_t by matrix products), Bayes' rule by enumeration
over x_s, and the mixture over x0 summed term by term. Also: normalization, the absorbing mask
state, the marginal transition's frequencies, finite losses for hostile logits, the
cross-entropy, and O(B L K) memory for the posterior."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from diffkit import CategoricalProcess
from diffkit.processes.schedules import make_schedule

# One intra-op thread: see conftest.single_thread.
pytestmark = pytest.mark.usefixtures("single_thread")

K, T = 5, 40
MARGINALS = [1.0, 4.0, 2.0, 3.0, 0.5]  # unnormalized on purpose: the process normalizes them
CASES = [
    ("uniform", "linear"),
    ("uniform", "cosine"),
    ("absorbing", "linear"),
    ("absorbing", "cosine"),
    ("marginal", "linear"),
    ("marginal", "cosine"),
    ("matrix", None),
]
CASE_IDS = [f"{k}-{s}" if s else k for k, s in CASES]

# Exact identities in float64: one Bayes ratio or a handful of K-term sums, each off by at most a
# few ulps. 1e-12 leaves room for the products of up to T = 40 matrices in the reference.
EXACT = dict(rtol=0, atol=1e-12)


def build(kind: str, schedule: str | None, cat_ref, seed: int = 0, num_classes: int = K, num_steps: int = T):
    """The process under test and its explicit-matrix reference."""
    if kind == "matrix":
        Q = cat_ref.random_matrices(num_steps, num_classes, torch.Generator().manual_seed(seed))
        return CategoricalProcess(num_classes, num_steps, transition=Q), cat_ref.Reference(Q)
    marginals = MARGINALS[:num_classes] if kind == "marginal" else None
    proc = CategoricalProcess(num_classes, num_steps, transition=kind, schedule=schedule, marginals=marginals)
    betas = make_schedule(schedule, num_steps).betas
    return proc, cat_ref.Reference.mixing(betas, cat_ref.pi(kind, num_classes, marginals))


def pairs_for(num_steps: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """(t, s) with 0 <= s < t: both ends, one-step, big jumps and random ones."""
    pairs = {(1, 0), (num_steps, 0), (num_steps, num_steps - 1), (2, 1), (num_steps, 1), (num_steps // 2, 0)}
    while len(pairs) < 14:
        t = int(torch.randint(1, num_steps + 1, (1,), generator=gen))
        pairs.add((t, int(torch.randint(0, t, (1,), generator=gen))))
    return sorted(pairs)


@pytest.mark.parametrize("kind, schedule", CASES, ids=CASE_IDS)
def test_posterior_with_ids_matches_brute_force_bayes(kind, schedule, float64, gen, cat_ref) -> None:
    proc, ref = build(kind, schedule, cat_ref)
    rows, expected = [], []
    for t, s in pairs_for(T, gen):
        for x0 in range(K):
            for x_t in range(ref.S):
                if ref.Qbar[t][x0, x_t] > 0:  # only pairs that q can produce
                    rows.append((x_t, x0, t, s))
                    expected.append(ref.posterior(x_t, x0, t, s))
    x_t, x0, t, s = (torch.tensor(c) for c in zip(*rows, strict=True))
    post = proc.posterior(x_t, x0, t, s)  # one batch, a different (t, s) per element
    assert post.shape == (len(rows), ref.S)
    torch.testing.assert_close(post, torch.stack(expected), **EXACT)
    assert bool((post >= 0).all())
    torch.testing.assert_close(post.sum(-1), torch.ones(len(rows)), **EXACT)


@pytest.mark.parametrize("kind, schedule", CASES, ids=CASE_IDS)
def test_posterior_with_probabilities_is_the_mixture(kind, schedule, float64, gen, cat_ref) -> None:
    proc, ref = build(kind, schedule, cat_ref)
    rows, probs, expected = [], [], []
    for t, s in pairs_for(T, gen):
        for x_t in range(ref.S):
            p = torch.rand(K, generator=gen, dtype=torch.float64)
            p[torch.rand(K, generator=gen) < 0.3] = 0.0  # some candidates carry no weight at all
            p = p / p.sum() if p.sum() > 0 else torch.full((K,), 1.0 / K)
            consistent = [x0 for x0 in range(K) if ref.Qbar[t][x0, x_t] > 0 and p[x0] > 0]
            if not consistent:
                continue
            rows.append((x_t, t, s))
            probs.append(p)
            expected.append(ref.mixture_posterior(x_t, p, t, s))
    x_t, t, s = (torch.tensor(c) for c in zip(*rows, strict=True))
    post = proc.posterior(x_t, torch.stack(probs), t, s)
    torch.testing.assert_close(post, torch.stack(expected), **EXACT)
    assert bool((post >= 0).all())
    torch.testing.assert_close(post.sum(-1), torch.ones(len(rows)), **EXACT)
    # A one-hot probability vector is the same as the id.
    x0_ids = torch.randint(0, K, (len(rows),), generator=gen)
    ok = torch.tensor([bool(ref.Qbar[int(ti)][int(a), int(b)] > 0) for a, b, ti in zip(x0_ids, x_t, t, strict=True)])
    torch.testing.assert_close(
        proc.posterior(x_t[ok], F.one_hot(x0_ids[ok], K).double(), t[ok], s[ok]),
        proc.posterior(x_t[ok], x0_ids[ok], t[ok], s[ok]),
        **EXACT,
    )


@pytest.mark.parametrize("kind, schedule", CASES, ids=CASE_IDS)
def test_marginal_and_transition_are_the_matrix_products(kind, schedule, float64, gen, cat_ref) -> None:
    proc, ref = build(kind, schedule, cat_ref)
    x0 = torch.arange(K)
    states = torch.arange(ref.S)
    assert torch.equal(proc.marginal(x0, 0), F.one_hot(x0, ref.S).double())
    for t, s in pairs_for(T, gen):
        m_t = proc.marginal(x0, t)  # (K, S): rows of Qbar_t
        m_s = proc.marginal(x0, s)
        Q_ts = proc.transition(states, t, s)  # (S, S): rows of Q_{t|s}
        torch.testing.assert_close(m_t, ref.Qbar[t][:K], **EXACT)
        torch.testing.assert_close(Q_ts, ref.Q_ts(t, s), **EXACT)
        torch.testing.assert_close(m_s @ Q_ts, m_t, **EXACT)  # Qbar_s Q_{t|s} = Qbar_t
        torch.testing.assert_close(m_t.sum(-1), torch.ones(K), **EXACT)


@pytest.mark.parametrize("kind, schedule", CASES, ids=CASE_IDS)
def test_q_sample_frequencies_and_given_noise(kind, schedule, float64, gen, cat_ref) -> None:
    proc, ref = build(kind, schedule, cat_ref)
    N, times = 20000, (1, 5, 20, 33, T)
    x0 = torch.arange(K).repeat(N, 1)  # (N, K): element k of every row has x0 = k
    t_row = torch.tensor(times).repeat(N // len(times))  # (N,)
    out = proc.q_sample(x0, t_row, generator=gen)
    for t_i in times:
        sel = out.x_t[t_row == t_i]  # (n, K)
        n = sel.shape[0]
        freq = F.one_hot(sel, ref.S).double().mean(0)  # (K, S)
        p = ref.Qbar[t_i][:K]
        # Fixed seed; 5 binomial standard errors per cell (+1e-12 for cells with p = 0 or 1).
        assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12).all()), f"t = {t_i}"
    again = proc.q_sample(x0, t_row, noise=out.noise)
    assert torch.equal(again.x_t, out.x_t)


def test_posterior_shapes_for_sequences(float64, gen, cat_ref) -> None:
    proc, _ = build("uniform", "cosine", cat_ref)
    x0 = torch.randint(0, K, (3, 4, 2), generator=gen)
    t = torch.tensor([1, 20, T])
    x_t = proc.q_sample(x0, t, generator=gen).x_t
    post = proc.posterior(x_t, x0, t)
    assert post.shape == (3, 4, 2, K)
    # Element by element it is the same as the flat call.
    flat = proc.posterior(x_t.reshape(3, 8)[:, 5], x0.reshape(3, 8)[:, 5], t)
    torch.testing.assert_close(post.reshape(3, 8, K)[:, 5], flat, **EXACT)


# ----------------------------------------------------------------------------------- absorbing, marginal


def test_absorbing_has_a_mask_state(float64, cat_ref) -> None:
    proc, ref = build("absorbing", "cosine", cat_ref)
    assert proc.num_states == K + 1
    x0 = torch.arange(K)
    assert proc.marginal(x0, 3).shape == (K, K + 1)
    assert proc.prior_probs.shape == (K + 1,)
    # A token is either still x0 or the mask: all other ids have probability exactly 0.
    m = proc.marginal(x0, 7)
    off = ~(F.one_hot(x0, K + 1).bool() | (torch.arange(K + 1) == K))
    assert bool((m[off] == 0).all())
    # The mask state is a valid x_t (and x_s for transition), never valid clean data.
    mask_t = torch.full((K,), K)
    torch.testing.assert_close(
        proc.posterior(mask_t, x0, 10, 4), torch.stack([ref.posterior(K, i, 10, 4) for i in range(K)]), **EXACT
    )
    with pytest.raises(ValueError, match="mask"):
        proc.q_sample(torch.tensor([0, K, 1]), 3)
    with pytest.raises(ValueError, match="mask"):
        proc.posterior(mask_t, torch.tensor([0, 1, 2, 3, K]), 5)
    with pytest.raises(ValueError, match=str(K + 1)):
        proc.posterior(torch.tensor([K + 1]), torch.tensor([0]), 5)


def test_marginal_transition_needs_frequencies_until_set(float64, cat_ref) -> None:
    proc = CategoricalProcess(K, T, transition="marginal")
    assert proc.needs_marginals
    x0 = torch.arange(K)
    for call in (
        lambda: proc.marginal(x0, 3),
        lambda: proc.posterior(x0, x0, 3),
        lambda: proc.prior_sample((2, 3)),
        lambda: proc.q_sample(x0, 3),
    ):
        with pytest.raises(ValueError, match="marginals") as info:
            call()
        assert "set_marginals" in str(info.value)
    proc.set_marginals(torch.tensor(MARGINALS))
    assert not proc.needs_marginals
    _, ref = build("marginal", "cosine", cat_ref)
    torch.testing.assert_close(proc.marginal(x0, 9), ref.Qbar[9], **EXACT)
    torch.testing.assert_close(
        proc.posterior(x0.flip(0), x0, 9, 2),
        torch.stack([ref.posterior(K - 1 - i, i, 9, 2) for i in range(K)]),
        **EXACT,
    )
    # The frequencies are data, so they travel in the state dict.
    fresh = CategoricalProcess(K, T, transition="marginal")
    fresh.load_state_dict(proc.state_dict())
    torch.testing.assert_close(fresh.marginal(x0, 9), ref.Qbar[9], **EXACT)


def test_marginals_argument_errors() -> None:
    with pytest.raises(ValueError, match="marginals"):
        CategoricalProcess(3, 10, transition="marginal", marginals=[0.5, 0.5])
    with pytest.raises(ValueError, match="marginals"):
        CategoricalProcess(3, 10, transition="marginal", marginals=[0.5, -0.1, 0.6])
    with pytest.raises(ValueError, match="marginals"):
        CategoricalProcess(3, 10, transition="uniform", marginals=[0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="set_marginals"):
        CategoricalProcess(3, 10, transition="uniform").set_marginals([0.2, 0.3, 0.5])


@pytest.mark.parametrize("kind, schedule", CASES, ids=CASE_IDS)
def test_prior_is_uniform_data_pushed_to_T_and_prior_sample_draws_it(kind, schedule, float64, gen, cat_ref) -> None:
    proc, ref = build(kind, schedule, cat_ref)
    u = torch.full((K,), 1.0 / K, dtype=torch.float64)
    expected = u @ ref.Qbar[T][:K]  # p(x_T) = u Qbar_T, u uniform over the data classes
    torch.testing.assert_close(proc.prior_probs, expected, **EXACT)
    N = 20000
    draws = proc.prior_sample((N // 4, 4), generator=gen)
    assert draws.shape == (N // 4, 4) and draws.dtype == torch.long
    freq = torch.bincount(draws.reshape(-1), minlength=ref.S).double() / N
    # Fixed seed; 5 binomial standard errors per state (+1e-12 for states of probability 0).
    assert bool(((freq - expected).abs() <= 5 * (expected * (1 - expected) / N).sqrt() + 1e-12).all())
    mask = torch.tensor([[True, True, False, False]]).expand(N // 4, 4)
    assert bool((proc.prior_sample((N // 4, 4), generator=gen, mask=mask)[~mask] == 0).all())


# ----------------------------------------------------------------------------------- errors


def test_float_ids_raise_type_error(float64, cat_ref) -> None:
    proc, _ = build("uniform", "cosine", cat_ref)
    # Float ids are a dtype error wherever clean data enter (docs/design.md: TypeError for a wrong dtype).
    # Probabilities are accepted as x0 by posterior() / marginal() only, never by q_sample, which
    # must return x_t of x0's shape: a (B, L) float batch with L == K must not pass as probabilities.
    with pytest.raises(TypeError, match="int64"):
        proc.validate_x0(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="int64"):
        proc.q_sample(torch.tensor([0.0, 1.0]), 3)
    with pytest.raises(TypeError, match="int64"):
        proc.q_sample(torch.arange(K, dtype=torch.float64).reshape(1, K), 3)


def test_id_errors(float64, cat_ref) -> None:
    proc, _ = build("uniform", "cosine", cat_ref)
    with pytest.raises(TypeError, match="x_t"):
        proc.posterior(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 3)
    with pytest.raises(TypeError):
        proc.q_sample(torch.tensor([True, False]), 3)
    with pytest.raises(ValueError) as info:
        proc.q_sample(torch.tensor([0, 7, 1]), 3)
    assert "7" in str(info.value) and "x0" in str(info.value)
    with pytest.raises(ValueError, match="-1"):
        proc.posterior(torch.tensor([0, 1]), torch.tensor([0, -1]), 3)
    with pytest.raises(ValueError, match="x0"):
        proc.posterior(torch.tensor([0, 1]), torch.full((3, K), 1.0 / K), 3)  # batch mismatch
    with pytest.raises(ValueError, match="last dim"):
        proc.posterior(torch.tensor([0, 1]), torch.full((2, K + 2), 1.0 / (K + 2)), 3)
    with pytest.raises(TypeError, match="t"):
        proc.posterior(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="s"):
        proc.posterior(torch.tensor([0, 1]), torch.tensor([0, 1]), 3, 3)
    with pytest.raises(ValueError, match="0..T"):
        proc.posterior(torch.tensor([0, 1]), torch.tensor([0, 1]), T + 1)
    with pytest.raises(ValueError, match="num_classes"):
        CategoricalProcess(0, 10)
    with pytest.raises(ValueError, match="transition"):
        CategoricalProcess(3, 10, transition="gaussian")  # type: ignore[arg-type]


def test_matrix_transition_validation() -> None:
    good = torch.full((4, 3, 3), 1.0 / 3)
    CategoricalProcess(3, 4, transition=good)
    with pytest.raises(ValueError, match=r"\(T, K, K\)"):
        CategoricalProcess(3, 5, transition=good)
    bad = good.clone()
    bad[1, 0, 0] = 0.5
    with pytest.raises(ValueError, match="sum to 1"):
        CategoricalProcess(3, 4, transition=bad)
    neg = good.clone()
    neg[0, 0, 0], neg[0, 0, 1] = -0.1, 1.0 / 3 + 0.1 + 1.0 / 3
    with pytest.raises(ValueError, match="non-negative"):
        CategoricalProcess(3, 4, transition=neg)


# ----------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("kind, schedule", CASES, ids=CASE_IDS)
def test_vlb_terms_match_the_reference_kl_and_decoder(kind, schedule, float64, gen, cat_ref) -> None:
    proc, ref = build(kind, schedule, cat_ref)
    t = torch.tensor([1, 1, 2, 3, 17, T - 1, T, T])
    B = t.shape[0]
    x0 = torch.randint(0, K, (B,), generator=gen)
    x_t = proc.q_sample(x0, t, generator=gen).x_t
    logits = 3 * torch.randn(B, K, generator=gen)
    expected = []
    for b in range(B):
        t_b, x0_b, xt_b = int(t[b]), int(x0[b]), int(x_t[b])
        p = ref.mixture_posterior(xt_b, logits[b].softmax(-1), t_b, t_b - 1)  # p(x_{t-1} | x_t)
        if t_b == 1:
            expected.append(-torch.log(p[x0_b]))  # decoder: -log p(x0 | x_1)
        else:
            q = ref.posterior(xt_b, x0_b, t_b, t_b - 1)
            expected.append(sum(q[i] * (torch.log(q[i]) - torch.log(p[i])) for i in range(ref.S) if q[i] > 0))
    # 1e-10: a K-term KL of probabilities each exact to ~1e-15 relative.
    torch.testing.assert_close(proc.vlb(logits, x0, x_t, t, "x0"), torch.stack(expected), rtol=1e-10, atol=1e-12)
    # prior term: KL(x0 Qbar_T || p(x_T)) by hand.
    prior = proc.prior_probs
    q_T = ref.Qbar[T][x0]
    torch.testing.assert_close(
        proc.prior_term(x0), (torch.xlogy(q_T, q_T) - q_T * torch.log(prior)).sum(-1), rtol=1e-10, atol=1e-14
    )


@pytest.mark.parametrize(
    "kind, schedule",
    [c for c in CASES if c[1] != "linear"],
    ids=[i for c, i in zip(CASES, CASE_IDS, strict=True) if c[1] != "linear"],
)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_losses_and_elbo_terms_are_finite_for_any_logits(kind, schedule, scale, default_dtype, gen, cat_ref) -> None:
    proc, _ = build(kind, schedule, cat_ref)
    B, L = 8, 6
    t = torch.tensor([1, 1, 2, T // 2, T - 1, T, T, 3])
    x0 = torch.randint(0, K, (B, L), generator=gen)
    x_t = proc.q_sample(x0, t, generator=gen).x_t
    # KLs and cross-entropies are >= 0 mathematically; computed, they may dip below by rounding:
    # at most ~(K + 1) terms of size <= |log tiny| ~ 87 per element, times T for kind="kl".
    slack = T * (K + 1) * 87 * torch.finfo(default_dtype).eps
    for name in proc.parametrizations:
        param = proc.get_parametrization(name)
        shape = param.output_shape(proc, x_t)
        logits = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(default_dtype)
        for loss_kind in ("simple", "kl", "hybrid"):
            loss = proc.loss(logits, x0, x_t, t, None, name, kind=loss_kind)
            assert loss.shape == (B,) and bool(torch.isfinite(loss).all()), f"{name}/{loss_kind}: {loss}"
            assert bool((loss >= -slack).all()), f"{name}/{loss_kind}: a cross-entropy or KL is never negative"
        vlb = proc.vlb(logits, x0, x_t, t, name)
        assert bool(torch.isfinite(vlb).all()) and bool((vlb >= -slack).all()), f"{name}: {vlb}"
    L_T = proc.prior_term(x0)
    assert bool(torch.isfinite(L_T).all()) and bool((L_T >= -slack).all()), L_T


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_absorbing_reverse_keeps_unmasked_tokens_for_any_logits(scale, default_dtype, gen) -> None:
    # Under absorbing noise an unmasked x_t = b can only come from x0 = b, and then x_s = b for
    # every s < t: q(x_s | x_t = b) is the point mass at b whatever p(x0 | x_t) says. A confident
    # network (logit gaps of a few hundred underflow softmax in float32; 1e4 in float64) may give
    # p(x0 = b) = 0 exactly; the reverse step must still be a distribution, and keep b.
    proc = CategoricalProcess(K, T, transition="absorbing")
    B, L = 4, 6
    x_t = torch.randint(0, K, (B, L), generator=gen)  # all unmasked
    logits = torch.zeros(B, L, K, dtype=default_dtype)
    logits.scatter_(-1, ((x_t + 1) % K).unsqueeze(-1), scale)  # all the mass on a class != x_t
    logits.scatter_(-1, x_t.unsqueeze(-1), -scale)
    t = torch.full((B,), 10)
    p = proc.reverse(logits, x_t, t, t - 1)
    assert bool(torch.isfinite(p).all()) and bool((p >= 0).all())
    # Rows of a distribution, in the data's precision (float32 eps ~1.2e-7, x 10 for a 6-term sum).
    torch.testing.assert_close(p.sum(-1), torch.ones(B, L, dtype=p.dtype), rtol=0, atol=10 * torch.finfo(p.dtype).eps)
    assert torch.equal(proc.step(logits, x_t, t, t - 1, generator=gen), x_t), "an unmasked token must stay as it is"


@pytest.mark.parametrize("kind", ["uniform", "absorbing"])
def test_cross_entropy_matches_torch(kind, float64, gen, cat_ref) -> None:
    proc, _ = build(kind, "cosine", cat_ref)
    B, L = 6, 7
    x0 = torch.randint(0, K, (B, L), generator=gen)
    t = torch.randint(1, T + 1, (B,), generator=gen)
    x_t = proc.q_sample(x0, t, generator=gen).x_t
    logits = 4 * torch.randn(B, L, K, generator=gen)
    reference = F.cross_entropy(logits.reshape(-1, K), x0.reshape(-1), reduction="none").reshape(B, L).mean(1)
    # 1e-12: both are logsumexp minus the picked logit, in float64.
    torch.testing.assert_close(proc.loss(logits, x0, x_t, t, None, "x0", kind="simple"), reference, rtol=0, atol=1e-12)
    # hybrid = simple + w * kl
    kl = proc.loss(logits, x0, x_t, t, None, "x0", kind="kl")
    torch.testing.assert_close(
        proc.loss(logits, x0, x_t, t, None, "x0", kind="hybrid", hybrid_weight=0.01),
        reference + 0.01 * kl,
        rtol=1e-12,
        atol=1e-12,
    )
    # The oracle output (a network that knows x0) has a cross-entropy of ~0 (its logits are log tiny).
    oracle = proc.get_parametrization("x0").oracle_output(proc, x0, x_t, t, None)
    assert proc.loss(oracle, x0, x_t, t, None, "x0").abs().max().item() < 1e-30


def test_previous_step_refuses_to_stride(float64, gen, cat_ref) -> None:
    proc, _ = build("uniform", "cosine", cat_ref)
    x_t = torch.randint(0, K, (2, 3), generator=gen)
    out = torch.randn(2, 3, K, generator=gen)
    with pytest.raises(ValueError, match="previous-step"):
        proc.reverse(out, x_t, 10, 7, parametrization="previous-step")
    torch.testing.assert_close(proc.reverse(out, x_t, 10, 9, parametrization="previous-step"), out.softmax(-1), **EXACT)


def test_float32_posterior_keeps_float32_precision(gen) -> None:
    # Tables are float64 (docs/design.md); a float32 posterior should then be accurate to float32
    # precision. Forming 1 - alpha_bar_t / alpha_bar_s from float32-cast alpha_bars instead loses
    # ~4 digits at small t, where alpha_{t|s} = 1 - O(1e-4) (catastrophic cancellation).
    proc = CategoricalProcess(K, 1000, transition="uniform")
    x0 = torch.randint(0, K, (6, 8), generator=gen)
    t = torch.tensor([2, 3, 5, 10, 100, 1000])
    x_t = proc.q_sample(x0, t, generator=gen).x_t
    probs32 = torch.softmax(torch.randn(6, 8, K, generator=gen), -1)  # float32
    got = proc.posterior(x_t, probs32, t)
    want = proc.posterior(x_t, probs32.double(), t)  # same inputs, float64 arithmetic
    assert got.dtype == torch.float32
    # 1e-5 relative: ~100 float32 ulps, room for a dozen float32 operations; cancellation gives ~4e-4.
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-12)


# ----------------------------------------------------------------------------------- memory


def test_posterior_memory_is_linear_in_K(float64, gen) -> None:
    B, L, K_big = 2, 64, 1024
    proc = CategoricalProcess(K_big, 100, transition="uniform")
    x_t = torch.randint(0, K_big, (B, L), generator=gen)
    x0_probs = torch.softmax(torch.randn(B, L, K_big, generator=gen), -1)
    x0_ids = torch.randint(0, K_big, (B, L), generator=gen)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        mix = proc.posterior(x_t, x0_probs, 50, 20)
        post = proc.posterior(x_t, x0_ids, 50, 20)
    one_tensor = B * L * K_big * 8  # bytes of one (B, L, K) float64 tensor: 1 MiB
    largest = max(e.cpu_memory_usage for e in prof.events())
    # A K x K matrix per element would be 1024x larger (1 GiB); a handful of (B, L, K) tensors is fine.
    assert largest <= 16 * one_tensor, f"an op allocated {largest} bytes, > 16 (B, L, K) tensors"
    assert mix.shape == post.shape == (B, L, K_big)
    torch.testing.assert_close(mix.sum(-1), torch.ones(B, L), **EXACT)
    # Spot-check one element of the id posterior against the closed form for uniform noise:
    # q(x_s | x_t, x0) ∝ (a_ts [x_s = x_t] + (1 - a_ts) / K) (a_s [x_s = x0] + (1 - a_s) / K).
    ab = make_schedule("cosine", 100).alpha_bar
    a_t, a_s = ab[50], ab[20]
    a_ts = a_t / a_s
    b, pos = 1, 17
    xs = torch.arange(K_big)
    like = a_ts * (xs == x_t[b, pos]) + (1 - a_ts) / K_big
    prior = a_s * (xs == x0_ids[b, pos]) + (1 - a_s) / K_big
    torch.testing.assert_close(post[b, pos], like * prior / (like * prior).sum(), **EXACT)
