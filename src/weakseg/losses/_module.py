"""The module form shared by the losses: an ``nn.Module`` that only stores hyper-parameters and
calls its loss function with them (kornia's pattern: the function holds the math)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn


class LossModule(nn.Module):
    """``function(*inputs, **hyper_parameters, **options)``, the hyper-parameters stored as
    attributes (checked by the subclass's ``__init__``) and shown by ``repr``."""

    function: ClassVar[Callable[..., Any]]

    def __init__(self, **hyper_parameters: Any) -> None:
        super().__init__()
        self.hyper_parameters = tuple(hyper_parameters)
        for name, value in hyper_parameters.items():
            setattr(self, name, value)

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
