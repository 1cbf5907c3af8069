"""The module form shared by the losses: an ``nn.Module`` that only stores hyper-parameters and
calls its loss function with them (kornia's pattern: the function holds the math).

A subclass names its ``function``; its constructor is derived from that function's keyword-only
parameters (minus the per-call ones, :attr:`LossModule.call_arguments`), with the same defaults,
so a hyper-parameter is declared once, in the function's signature. Each value is checked when
the module is built, by :data:`HYPER_PARAMETER_CHECKS` (by name) and the subclass's ``checks``.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from weakseg._validation import (
    check_bool,
    check_choice,
    check_n_iter,
    check_nonnegative,
    check_positive,
)
from weakseg.losses._affinity import BACKENDS

# A hyper-parameter check: ``(name, value) -> the value to store``; it raises ValueError /
# TypeError naming the parameter.
Check = Callable[[str, Any], Any]


def optional(check: Check) -> Check:
    """``check`` for a value that may also be ``None`` (kept as ``None``)."""
    return lambda name, value: None if value is None else check(name, value)


def choice(choices: Sequence[str]) -> Check:
    """A check that the value is one of ``choices``."""
    return functools.partial(_check_choice, choices=tuple(choices))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    return check_choice(name, value, choices)


def own_checks(**checks: Check) -> Mapping[str, Check]:
    """A subclass's ``checks`` (read-only): ``checks = own_checks(normalization=choice(...))``."""
    return types.MappingProxyType(checks)


def _as_tuple(name: str, value: Any) -> tuple | None:
    return None if value is None else tuple(value)


# The checks of the hyper-parameters that several losses share, by name.
HYPER_PARAMETER_CHECKS: dict[str, Check] = {
    "sigma_rgb": check_positive,
    "sigma_xy": check_positive,
    "nc_sigma_rgb": optional(check_positive),
    "nc_sigma_xy": optional(check_positive),
    "gamma": check_nonnegative,
    "scale_factor": check_positive,
    "spacing": _as_tuple,
    "backend": choice(BACKENDS),
    "n_iter": lambda name, value: check_n_iter(value),
    "w_bilateral": check_nonnegative,
    "theta_alpha": check_positive,
    "theta_beta": check_positive,
    "w_gaussian": check_nonnegative,
    "theta_gamma": check_positive,
    "backprop_crf": check_bool,
}


def _hyper_parameter_signature(cls: type[LossModule]) -> inspect.Signature:
    """``(self, [weight=1.0,] *, <the function's keyword-only parameters>)``."""
    function = inspect.signature(cls.function)
    keyword = inspect.Parameter.KEYWORD_ONLY
    lead = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if issubclass(cls, WeightedLoss):
        lead.append(
            inspect.Parameter(
                "weight", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=1.0, annotation="float"
            )
        )
    own = [
        p
        for p in function.parameters.values()
        if p.kind is keyword and p.name not in cls.call_arguments
    ]
    return inspect.Signature(lead + own, return_annotation="None")


def _derived_init(cls: type[LossModule]) -> Callable[..., None]:
    signature = _hyper_parameter_signature(cls)

    def __init__(self: LossModule, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        del values["self"]
        weight = values.pop("weight", None)
        checked = type(self).check(values)
        if weight is None:
            LossModule.__init__(self, **checked)
        else:
            WeightedLoss.__init__(self, weight, **checked)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = f"The hyper-parameters of :func:`{cls.function.__name__}`, checked."
    return __init__


class LossModule(nn.Module):
    """``function(*inputs, **hyper_parameters, **options)``, the hyper-parameters stored as
    attributes (tensors as buffers) and shown by ``repr``.

    Subclasses set ``function`` (and optionally ``call_arguments``, the keyword-only
    parameters of ``function`` given per call rather than stored, and ``checks``, name ->
    check overriding :data:`HYPER_PARAMETER_CHECKS`); their constructor is derived from it.
    """

    function: ClassVar[Callable[..., Any]]
    call_arguments: ClassVar[tuple[str, ...]] = ()
    checks: ClassVar[Mapping[str, Check]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "function" in vars(cls) and "__init__" not in vars(cls):
            cls.__init__ = _derived_init(cls)  # type: ignore[method-assign]

    def __init__(self, **hyper_parameters: Any) -> None:
        super().__init__()
        self.hyper_parameters = tuple(hyper_parameters)
        for name, value in hyper_parameters.items():
            if isinstance(value, Tensor):
                self.register_buffer(name, value.detach().clone())
            else:
                setattr(self, name, value)

    @classmethod
    def check(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The hyper-parameters to store: each value through its check (in signature order)."""
        checks = {**HYPER_PARAMETER_CHECKS, **cls.checks}
        return {
            name: checks[name](name, value) if name in checks else value
            for name, value in values.items()
        }

    def arguments(self) -> dict[str, Any]:
        """The stored hyper-parameters, as keyword arguments of :attr:`function`."""
        return {name: getattr(self, name) for name in self.hyper_parameters}

    def forward(self, *inputs: Any, **options: Any) -> Any:
        return type(self).function(*inputs, **self.arguments(), **options)

    def extra_repr(self) -> str:
        shown = [(n, v) for n, v in self.arguments().items() if v is not None]
        return ", ".join(f"{name}={value!r}" for name, value in shown)


class WeightedLoss(LossModule):
    """``weight * function(*inputs, **hyper_parameters)``: a term of a training objective."""

    def __init__(self, weight: float, **hyper_parameters: Any) -> None:
        super().__init__(**hyper_parameters)
        self.weight = float(weight)

    def forward(self, *inputs: Any, **options: Any) -> Tensor:
        return self.weight * super().forward(*inputs, **options)

    def extra_repr(self) -> str:
        rest = super().extra_repr()
        return f"weight={self.weight}" + (f", {rest}" if rest else "")
