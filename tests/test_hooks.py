"""Every public hook that sample(), nll_bound() and DiffusionModule's training step use is called.

For each (caller, hook) pair listed in docs/plugins.md, a subclass that overrides only that hook
(recording the call, then deferring to the built-in one) is run through the caller, and the
override must have run. Overriding a hook never leaves it bypassed by a fused path: the fused
Gaussian / categorical steps stand down for a subclass that overrides what they fuse
(capability attributes, see ``ForwardProcess.fuses_reverse_step`` and
``Parametrization.x0_is_linear`` / ``x0_is_softmax``).
"""

from __future__ import annotations

import pytest
import torch

from diffkit import CategoricalProcess, GaussianProcess, ProductProcess, nll_bound, sample
from diffkit.module import DiffusionModule
from diffkit.processes.categorical import CategoricalX0
from diffkit.processes.gaussian import EpsParametrization

T = 6

#: caller -> the process hooks it calls (docs/plugins.md, "Which hooks each caller uses").
PROCESS_HOOKS = {
    "sample": [
        "get_parametrization",
        "sampling_grid",
        "prior_sample",
        "step",
        "reverse",
        "reverse_from_x0",
        "reverse_sample",
        "step_pair",
    ],
    "nll_bound": [
        "validate_x0",
        "get_parametrization",
        "prior_term",
        "prior_kl",
        "num_elements",
        "q_sample",
        "vlb",
        "vlb_terms",
        "posterior",
        "kl",
        "decoder_nll",
        "reverse_from_x0",
        "timesteps",
        "check_loss_inputs",
    ],
    "training_step": [
        "validate_x0",
        "sample_timesteps",
        "q_sample",
        "mean_loss",
        "loss",
        "check_loss_inputs",
        "timesteps",
        "get_parametrization",
    ],
    "training_step_kl": ["loss", "vlb_terms", "posterior", "kl", "decoder_nll", "reverse_from_x0"],
}
#: caller -> the parametrization hooks it calls.
PARAM_HOOKS = {
    "sample": ["reverse", "x0_from_output"],
    "nll_bound": ["reverse", "x0_from_output"],
    "training_step": ["simple_loss", "output_shape", "check_output"],
    "training_step_kl": ["reverse", "x0_from_output"],
}


def recording_subclass(base: type, hook: str, calls: list) -> type:
    """``base`` with ``hook`` overridden by a call-recording wrapper of the inherited one."""
    inherited = getattr(base, hook)

    def override(self, *args, **kwargs):
        calls.append(hook)
        return inherited(self, *args, **kwargs)

    return type(f"Recording_{hook}", (base,), {hook: override})


def make_process(kind: str, cls: type | None = None):
    if kind == "gaussian":
        return (cls or GaussianProcess)(T), "eps", torch.randn(4, 2)
    if kind == "categorical":
        return (cls or CategoricalProcess)(5, T, "absorbing"), "x0", torch.randint(0, 5, (4, 3))
    raise AssertionError(kind)


def denoiser_for(proc, x0):
    """A deterministic function of (x_t, t) with the parametrization's output shape."""
    if isinstance(proc, GaussianProcess):
        return lambda x, t: torch.tanh(x) * (t.to(x.dtype) / T).reshape(-1, 1)
    weights = torch.linspace(-1, 1, proc.num_classes)
    return lambda x, t: x.unsqueeze(-1).float() * weights + t.reshape(-1, 1, 1).float() / T


class Net(torch.nn.Module):
    """The same function as an nn.Module with one parameter (for the training step's backward)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn, self.scale = fn, torch.nn.Parameter(torch.ones(()))

    def forward(self, x, t):
        out = self.fn(x, t)
        return {k: self.scale * v for k, v in out.items()} if isinstance(out, dict) else self.scale * out


def run(caller: str, proc, param, x0) -> None:
    net = denoiser_for(proc, x0)
    if caller == "sample":
        sample(proc, net, tuple(x0.shape), param, generator=torch.Generator().manual_seed(0))
    elif caller == "nll_bound":
        nll_bound(proc, net, x0, param, generator=torch.Generator().manual_seed(0))
    else:
        loss = "kl" if caller == "training_step_kl" else "simple"
        module = DiffusionModule(proc, Net(net), param, loss=loss, num_eval_samples=0, noise_seed=0)
        for step in range(2):  # the first batch (checked) and a later one (trusted values)
            module.training_step(x0, step).backward()


CASES = [
    (caller, hook, kind)
    for caller, hooks in PROCESS_HOOKS.items()
    for hook in hooks
    for kind in ("gaussian", "categorical")
]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("caller, hook, kind", CASES, ids=[f"{c}-{h}-{k}" for c, h, k in CASES])
def test_an_overridden_process_hook_is_called(caller, hook, kind) -> None:
    calls: list = []
    base = GaussianProcess if kind == "gaussian" else CategoricalProcess
    proc, param, x0 = make_process(kind, recording_subclass(base, hook, calls))
    run(caller, proc, param, x0)
    assert hook in calls, f"{caller} did not call the overridden {kind} process hook {hook!r}"


PARAM_CASES = [
    (caller, hook, kind)
    for caller, hooks in PARAM_HOOKS.items()
    for hook in hooks
    for kind in ("gaussian", "categorical")
]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("caller, hook, kind", PARAM_CASES, ids=[f"{c}-{h}-{k}" for c, h, k in PARAM_CASES])
def test_an_overridden_parametrization_hook_is_called(caller, hook, kind) -> None:
    calls: list = []
    base = EpsParametrization if kind == "gaussian" else CategoricalX0
    proc, _, x0 = make_process(kind)
    run(caller, proc, recording_subclass(base, hook, calls)(), x0)
    assert hook in calls, f"{caller} did not call the overridden {kind} parametrization hook {hook!r}"


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("caller", ["sample", "nll_bound", "training_step"])
def test_product_process_calls_each_fields_hooks(caller) -> None:
    """A ProductProcess goes through every field's public step / q_sample / loss / posterior."""
    calls: list = []
    hooks = {"sample": "step", "nll_bound": "vlb_terms", "training_step": "loss"}
    hook = hooks[caller]
    X = recording_subclass(CategoricalProcess, hook, calls)(3, T, "uniform")
    E = recording_subclass(CategoricalProcess, "q_sample", calls)(2, T, "uniform")
    proc = ProductProcess({"X": X, "E": E}, symmetric=["E"])
    upper = torch.randint(0, 2, (4, 3, 3), generator=torch.Generator().manual_seed(0)).triu(1)
    x0 = {"X": torch.randint(0, 3, (4, 3)), "E": upper + upper.transpose(1, 2)}

    def net(x, t):
        return {"X": x["X"].unsqueeze(-1).float() * torch.ones(3), "E": x["E"].unsqueeze(-1).float() * torch.ones(2)}

    if caller == "sample":
        sample(proc, net, {"X": (4, 3), "E": (4, 3, 3)}, "x0", generator=torch.Generator().manual_seed(0))
    elif caller == "nll_bound":
        nll_bound(proc, net, x0, "x0", generator=torch.Generator().manual_seed(0))
        assert "q_sample" in calls
    else:
        module = DiffusionModule(proc, Net(net), "x0", num_eval_samples=0, noise_seed=0)
        module.training_step(x0, 0).backward()
        assert "q_sample" in calls
    assert hook in calls


def test_sampling_grid_is_the_grid_sample_walks() -> None:
    """sample() asks the process for its grid: an overriding process chooses the times."""
    seen = []

    class Front(GaussianProcess):
        def sampling_grid(self, steps=None):
            return [self.num_steps, 5, 4, 0] if steps is None else super().sampling_grid(steps)

    proc = Front(T)
    sample(
        proc,
        lambda x, t: seen.append(int(t[0])) or torch.zeros_like(x),
        (2, 2),
        "x0",
        generator=torch.Generator().manual_seed(0),
    )
    assert seen == [T, 5, 4]
    seen.clear()
    sample(proc, lambda x, t: seen.append(int(t[0])) or torch.zeros_like(x), (2, 2), "x0", num_steps=2)
    assert seen == [T, 3]


def test_default_sampling_grid_is_evenly_strided() -> None:
    proc = GaussianProcess(10)
    assert proc.sampling_grid() == list(range(10, -1, -1))
    assert proc.sampling_grid(5) == [10, 8, 6, 4, 2, 0]
    assert proc.sampling_grid(3) == [10, 7, 3, 0]
    with pytest.raises(ValueError, match="num_steps"):
        proc.sampling_grid(11)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_the_fused_mean_loss_hook_is_called_and_stands_down_for_an_overridden_simple_loss() -> None:
    calls: list = []
    proc, _, x0 = make_process("gaussian")
    run("training_step", proc, recording_subclass(EpsParametrization, "mean_simple_loss", calls)(), x0)
    assert calls == ["mean_simple_loss", "mean_simple_loss"]  # the Gaussian eps loss takes the fused mean

    class OwnLoss(EpsParametrization):  # a new simple loss: the fused mean would bypass it
        def simple_loss(self, process, output, x0, x_t, t, noise):
            return super().simple_loss(process, output, x0, x_t, t, noise) * 2

    assert EpsParametrization.fuses_mean_loss and not OwnLoss.fuses_mean_loss
    out, x_t, t = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([1, 2, 3, 4])
    noise = torch.randn(4, 2)
    want = 2 * proc.loss(out, x0, x_t, t, noise, "eps").mean()
    torch.testing.assert_close(proc.mean_loss(out, x0, x_t, t, noise, OwnLoss()), want)

    class OwnProcessLoss(GaussianProcess):
        def loss(self, *args, **kwargs):
            return super().loss(*args, **kwargs) * 3

    assert GaussianProcess.fuses_mean_loss and not OwnProcessLoss.fuses_mean_loss
    torch.testing.assert_close(OwnProcessLoss(T).mean_loss(out, x0, x_t, t, noise, "eps"), 3 * want / 2)


def test_capabilities_are_withdrawn_from_overriding_subclasses() -> None:
    class OwnReverse(CategoricalProcess):
        def reverse_from_x0(self, x_t, x0_hat, t, s, eta=None):
            return super().reverse_from_x0(x_t, x0_hat, t, s, eta)

    class Redeclared(OwnReverse):
        fuses_reverse_step = True

    class OwnSoftmax(CategoricalX0):
        def x0_from_output(self, process, output, x_t, t):
            return super().x0_from_output(process, output, x_t, t)

    assert CategoricalProcess.fuses_reverse_step and not OwnReverse.fuses_reverse_step and Redeclared.fuses_reverse_step
    assert CategoricalX0.x0_is_softmax and not OwnSoftmax.x0_is_softmax
    assert not GaussianProcess.is_continuous_time and not GaussianProcess(3).is_continuous_time
