"""ProductProcess: independent processes on named fields that share one time t.

q(x_t | x0) = prod_f q_f(x_t^f | x0^f), so the posterior, the reverse step and every ELBO term
factorize over fields (and, inside a field, over elements). A DiGress graph is
``ProductProcess({"X": CategoricalProcess(...), "E": CategoricalProcess(...)}, symmetric=["E"])``
with a node mask; a mixed table is Gaussian numeric columns next to categorical ones.

Masks: a batch may carry a boolean node mask under ``mask_key`` (B, N). For a field of shape
(B, N, ...) an element is real where mask[b, n]; for a symmetric field (B, N, N, ...) the pair
(i, j) is real where mask[b, i] and mask[b, j] and i < j (the upper triangle: the diagonal is left
out, the lower triangle mirrors the upper one). Elements that are not real are never noised
(x_t keeps x0's value there), add nothing to any loss or ELBO term, and keep their value through
sampling.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from diffkit._checks import check_values
from diffkit.parametrizations import Parametrization, ParametrizationLike
from diffkit.processes.base import ForwardProcess, LossKind, Noised, check_loss_kind

__all__ = ["ProductProcess"]


#: A dict field name -> tensor (x0, x_t, outputs, noise of a ProductProcess); Any where the
#: ForwardProcess hooks it overrides say Tensor.
Fields = Any


def _sum(terms: list[Tensor]) -> Tensor:
    """terms[0] + terms[1] + ... in field order (a ProductProcess has at least one field)."""
    return functools.reduce(operator.add, terms)


class ProductProcess(ForwardProcess):
    """A dict of named processes sharing one t.

    Args:
        processes: field name -> ForwardProcess; all must have the same T.
        weights: field name -> loss weight (default 1 each; DiGress uses 5 for edges).
        symmetric: fields holding square (B, N, N, ...) tensors of undirected pairs.
        mask_key: the batch key of the optional (B, N) bool node mask.
        masked: fields the node mask applies to (default: every field).

    Raises:
        ValueError: empty or mismatched processes, unknown field names in the other arguments.
    """

    def __init__(
        self,
        processes: Mapping[str, ForwardProcess],
        weights: Mapping[str, float] | None = None,
        symmetric: Sequence[str] = (),
        mask_key: str = "mask",
        masked: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not processes:
            raise ValueError("processes: expected at least one field")
        steps = {name: p.num_steps for name, p in processes.items()}
        if len(set(steps.values())) != 1:
            raise ValueError(f"processes: every field must share one T, got {steps}")
        if mask_key in processes:
            raise ValueError(f"mask_key: {mask_key!r} is also a field name")
        for name, p in processes.items():
            if p.requires_time_agnostic_denoiser:  # its weight counts every element as a token: no padding
                raise ValueError(
                    f"processes: field {name!r} ({type(p).__name__}) needs a denoiser without time input and data "
                    "without padding; a ProductProcess field takes neither for granted (use its default weight)"
                )
        self.fields = nn.ModuleDict(dict(processes))
        self.weights = {name: 1.0 for name in processes}
        for name, w in (weights or {}).items():
            self._check_field(name, "weights")
            self.weights[name] = float(w)
        for name in symmetric:
            self._check_field(name, "symmetric")
        self.symmetric = tuple(symmetric)
        self.mask_key = mask_key
        self.masked = tuple(processes) if masked is None else tuple(masked)
        for name in self.masked:
            self._check_field(name, "masked")

    def field_processes(self) -> dict[str, ForwardProcess]:
        """Field name -> its process, typed (``self.fields`` is an nn.ModuleDict of them)."""
        return {name: cast(ForwardProcess, p) for name, p in self.fields.items()}

    def _check_field(self, name: str, arg: str) -> None:
        if name not in self.fields:
            raise ValueError(f"{arg}: unknown field {name!r}; the fields are {list(self.fields)}")

    @property
    def num_steps(self) -> int:
        return next(iter(self.field_processes().values())).num_steps

    @property
    def supports_eta(self) -> bool:  # type: ignore[override]
        return any(p.supports_eta for p in self.field_processes().values())

    # -- masks and symmetry
    def field_mask(self, name: str, x: Tensor, mask: Tensor | None) -> Tensor | None:
        """Bool mask of the real elements of field ``name`` (broadcastable to its elements)."""
        sym = name in self.symmetric
        if sym:
            n = x.shape[1]
            upper = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        if mask is None or name not in self.masked:
            if not sym:
                return None
            pair = upper.unsqueeze(0)  # (1, N, N)
        else:
            mask = mask.bool()
            if not sym:
                return mask.reshape(*mask.shape, *([1] * (x.ndim - 2)))
            pair = mask[:, :, None] & mask[:, None, :] & upper  # (B, N, N)
        return pair.reshape(*pair.shape, *([1] * (x.ndim - 3)))

    @staticmethod
    def _symmetrize(x_new: Tensor, x_ref: Tensor) -> Tensor:
        """Upper triangle of x_new, mirrored; the diagonal from x_ref. (B, N, N, ...)."""
        n = x_new.shape[1]
        upper = torch.ones(n, n, dtype=torch.bool, device=x_new.device).triu(1)
        upper = upper.reshape(1, n, n, *([1] * (x_new.ndim - 3)))
        lower = upper.transpose(1, 2)
        return torch.where(upper, x_new, torch.where(lower, x_new.transpose(1, 2), x_ref))

    def _settle(self, name: str, x_new: Tensor, x_ref: Tensor, mask: Tensor | None) -> Tensor:
        """Apply symmetry, then keep x_ref wherever the element is padding."""
        if name in self.symmetric:
            x_new = self._symmetrize(x_new, x_ref)
        if mask is not None and name in self.masked:
            m = mask.bool()
            if name in self.symmetric:
                m = m[:, :, None] & m[:, None, :]
            m = m.reshape(*m.shape, *([1] * (x_new.ndim - m.ndim)))
            x_new = torch.where(m, x_new, x_ref)
        return x_new

    def _mask(self, x: Mapping[str, Any]) -> Tensor | None:
        return x.get(self.mask_key)

    def _with_mask(self, out: dict, mask: Tensor | None) -> dict:
        if mask is not None:
            out[self.mask_key] = mask
        return out

    # -- validation and parametrizations
    def validate_x0(self, x0: Any, name: str = "x0") -> None:
        """Every field's ``validate_x0``, the mask's dtype and shape, and (a value check) symmetry."""
        self._check_fields(x0, name)
        for f, p in self.field_processes().items():
            p.validate_x0(x0[f], f"{name}[{f!r}]")
        mask = self._mask(x0)
        if mask is not None:
            if mask.dtype != torch.bool:
                raise TypeError(f"{name}[{self.mask_key!r}]: expected a bool node mask, got dtype {mask.dtype}")
            for f in self.masked:
                if x0[f].shape[:2] != mask.shape:
                    raise ValueError(
                        f"{name}[{f!r}]: leading shape {tuple(x0[f].shape[:2])} does not match mask {tuple(mask.shape)}"
                    )
        for f in self.symmetric:
            x = x0[f]
            if x.ndim < 3 or x.shape[1] != x.shape[2]:
                raise ValueError(f"{name}[{f!r}]: a symmetric field needs shape (B, N, N, ...), got {tuple(x.shape)}")
            if check_values() and not torch.equal(x, x.transpose(1, 2)):
                raise ValueError(f"{name}[{f!r}]: symmetric field is not symmetric (x[:, i, j] != x[:, j, i])")

    def _check_fields(self, x: Any, name: str) -> None:
        """Raise unless ``x`` is a dict holding every field."""
        if not isinstance(x, Mapping):
            raise TypeError(
                f"{name}: a ProductProcess expects a dict of fields {list(self.fields)}, got {type(x).__name__}"
            )
        missing = [f for f in self.fields if f not in x]
        if missing:
            raise ValueError(f"{name}: missing field(s) {missing}; expected {list(self.fields)}")

    def get_parametrization(self, parametrization: ParametrizationLike) -> dict[str, Parametrization]:  # type: ignore[override]
        """One name / object for every field, or a dict field -> name / object."""
        if isinstance(parametrization, Mapping):
            unknown = [f for f in parametrization if f not in self.fields]
            if unknown:
                raise ValueError(f"parametrization: unknown field(s) {unknown}; the fields are {list(self.fields)}")
            missing = [f for f in self.fields if f not in parametrization]
            if missing:
                raise ValueError(f"parametrization: no parametrization given for field(s) {missing}")
            return {f: p.get_parametrization(parametrization[f]) for f, p in self.field_processes().items()}
        return {f: p.get_parametrization(parametrization) for f, p in self.field_processes().items()}

    def _t(self, t: Tensor | int, x: Mapping[str, Tensor]) -> Tensor:
        first = x[next(iter(self.fields))]
        return self.timesteps(t, first.shape[0], first.device)

    # -- primitives, field by field
    def marginal(self, x0, t):
        return {f: p.marginal(x0[f], t) for f, p in self.field_processes().items()}

    def transition(self, x_s, t, s):
        return {f: p.transition(x_s[f], t, s) for f, p in self.field_processes().items()}

    def posterior(self, x_t, x0, t, s=None):
        return {f: p.posterior(x_t[f], x0[f], t, s) for f, p in self.field_processes().items()}

    def q_sample(
        self, x0: Fields, t: Tensor | int, noise: Fields | None = None, generator: torch.Generator | None = None
    ) -> Noised:
        """Noise every field at the shared t; padding and symmetric lower triangles follow (see module doc).

        Returns:
            Noised(x_t dict (with the mask passed through), noise dict).
        """
        self.validate_x0(x0)
        t = self._t(t, x0)
        mask = self._mask(x0)
        x_t, noises = {}, {}
        for f, p in self.field_processes().items():
            out = p.q_sample(x0[f], t, None if noise is None else noise[f], generator)
            x_t[f] = self._settle(f, out.x_t, x0[f], mask)
            noises[f] = out.noise
        return Noised(self._with_mask(x_t, mask), noises)

    def prior_sample(self, shape, *, device=None, generator=None, mask=None):
        """Draw every field from its prior. ``shape``: field -> (B, ...); padding is 0."""
        out = {}
        for f, p in self.field_processes().items():
            x = p.prior_sample(shape[f], device=device, generator=generator)
            out[f] = self._settle(f, x, torch.zeros_like(x), mask)
        return self._with_mask(out, mask)

    def prior_kl(self, x0):
        return {f: p.prior_kl(x0[f]) for f, p in self.field_processes().items()}

    def kl(self, q, p):
        return {f: proc.kl(q[f], p[f]) for f, proc in self.field_processes().items()}

    def decoder_nll(self, x0, p):
        return {f: proc.decoder_nll(x0[f], p[f]) for f, proc in self.field_processes().items()}

    def reverse_from_x0(self, x_t, x0_hat, t, s, eta=None):
        return {
            f: p.reverse_from_x0(x_t[f], x0_hat[f], t, s, eta=eta if p.supports_eta else None)
            for f, p in self.field_processes().items()
        }

    def reverse_sample(self, p, s, generator=None):
        return {f: proc.reverse_sample(p[f], s, generator) for f, proc in self.field_processes().items()}

    # -- derived operations, field by field with masks
    def reverse(self, output, x_t, t, s=None, parametrization="x0", eta=None):
        params = self.get_parametrization(parametrization)
        first = x_t[next(iter(self.fields))]
        t, s = self.step_pair(t, s, first.shape[0], first.device)
        return {
            f: params[f].reverse(p, output[f], x_t[f], t, s, eta=eta if p.supports_eta else None)
            for f, p in self.field_processes().items()
        }

    def step(self, output, x_t, t, s=None, parametrization="x0", generator=None, eta=None):
        """Each field's own ``step``, in field order, then symmetry and padding restored."""
        params = self.get_parametrization(parametrization)
        mask = self._mask(x_t)
        out = {
            f: self._settle(
                f, p.step(output[f], x_t[f], t, s, params[f], generator, eta if p.supports_eta else None), x_t[f], mask
            )
            for f, p in self.field_processes().items()
        }
        return self._with_mask(out, mask)

    def loss(
        self,
        output: Fields,
        x0: Fields,
        x_t: Fields,
        t: Tensor | int,
        noise: Fields | None,
        parametrization: ParametrizationLike,
        kind: LossKind = "simple",
        hybrid_weight: float = 1e-3,
        mask: Tensor | None = None,
    ) -> Tensor:
        """sum_f weight_f * (field f's ``loss`` over its real elements): (B,)."""
        params = self.get_parametrization(parametrization)
        self.check_loss_inputs(params, output, x0, x_t)
        t = self._t(t, x_t)
        check_loss_kind(kind)
        mask = self._mask(x0) if mask is None else mask
        terms = []
        for f, p in self.field_processes().items():
            fm = self.field_mask(f, x0[f], mask)
            nf = None if noise is None else noise[f]
            terms.append(self.weights[f] * p.loss(output[f], x0[f], x_t[f], t, nf, params[f], kind, hybrid_weight, fm))
        return _sum(terms)

    def check_loss_inputs(  # type: ignore[override]  # one parametrization per field
        self, param: dict[str, Parametrization], output: Fields, x0: Fields, x_t: Fields
    ) -> None:
        """Every field's shape / dtype checks (see ForwardProcess.check_loss_inputs); metadata only."""
        for name, value in (("output", output), ("x0", x0), ("x_t", x_t)):
            self._check_fields(value, name)
        for f, p in self.field_processes().items():
            p.check_loss_inputs(param[f], output[f], x0[f], x_t[f])

    def field_losses(
        self,
        output: Fields,
        x0: Fields,
        x_t: Fields,
        t: Tensor | int,
        noise: Fields | None,
        parametrization: ParametrizationLike,
        kind: LossKind = "simple",
        hybrid_weight: float = 1e-3,
    ) -> dict[str, Tensor]:
        """Unweighted per-field (B,) losses, for logging."""
        params = self.get_parametrization(parametrization)
        t = self._t(t, x_t)
        mask = self._mask(x0)
        return {
            f: p.loss(
                output[f],
                x0[f],
                x_t[f],
                t,
                None if noise is None else noise[f],
                params[f],
                kind,
                hybrid_weight,
                self.field_mask(f, x0[f], mask),
            )
            for f, p in self.field_processes().items()
        }

    def vlb(
        self,
        output: Fields,
        x0: Fields,
        x_t: Fields,
        t: Tensor | int,
        parametrization: ParametrizationLike,
        mask: Tensor | None = None,
    ) -> Tensor:
        params = self.get_parametrization(parametrization)
        t = self._t(t, x_t)
        mask = self._mask(x0) if mask is None else mask
        return _sum(
            [
                p.vlb(output[f], x0[f], x_t[f], t, params[f], self.field_mask(f, x0[f], mask))
                for f, p in self.field_processes().items()
            ]
        )

    def prior_term(self, x0: Fields, mask: Tensor | None = None) -> Tensor:
        mask = self._mask(x0) if mask is None else mask
        fields = self.field_processes().items()
        return _sum([p.prior_term(x0[f], self.field_mask(f, x0[f], mask)) for f, p in fields])

    def num_elements(self, x0: Fields, mask: Tensor | None = None) -> Tensor:
        mask = self._mask(x0) if mask is None else mask
        fields = self.field_processes().items()
        return _sum([p.num_elements(x0[f], self.field_mask(f, x0[f], mask)) for f, p in fields])

    def extra_repr(self) -> str:
        return f"weights={self.weights}, symmetric={self.symmetric}, mask_key={self.mask_key!r}"
