"""Plain YAML values to typed dataclass fields: the checks behind :meth:`TrainConfig.from_dict`.

Generic: nothing here knows a config key. Errors are :class:`~weakseg.errors.ConfigError`
naming the key, the expected type and the value.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from weakseg.errors import ConfigError

__all__ = ["convert", "numbers_from_strings", "suggest"]


def suggest(key: str, known: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def convert(key: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` as the type ``hint`` (int, float, bool, str, list[float], dict, X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else convert(key, value, options[0], source)
    bad = ConfigError(
        f"config key {key!r} must be {_type_name(hint)}, got {value!r} "
        f"({type(value).__name__}) in {source}"
    )
    if hint is bool or hint is int:
        wrong = not isinstance(value, hint) or (hint is int and isinstance(value, bool))
        if wrong:
            raise bad
        return value
    if hint is float:  # YAML 1.1 reads 2e-9 (no dot) as a string; accept it as a number
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad
        return str(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        (item,) = typing.get_args(hint)
        return [convert(key, v, item, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): v for k, v in value.items()}
    return value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))


# String-valued loss and CRF parameters (any other string value is read as a number).
STRING_KEYS: tuple[str, ...] = (
    "normalization",
    "backend",
    "boundary",
    "crf_normalization",
    "loss_normalization",
)


def numbers_from_strings(
    where: str, params: Mapping[str, Any], allowed: Sequence[str], source: str
) -> dict[str, Any]:
    """``params`` checked against the ``allowed`` names, numbers written as strings (YAML 1.1
    reads ``2e-9`` as one) made floats and an integral ``n_iter`` an int; ``where`` names the
    mapping in the errors."""
    kwargs = {}
    for key, value in params.items():
        if key not in allowed:
            raise ConfigError(
                f"unknown parameter {key!r} in {where} ({source}); known: "
                f"{', '.join(allowed)}{suggest(key, allowed)}"
            )
        if isinstance(value, str) and key not in STRING_KEYS:
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(
                    f"{where}.{key} must be a number, got {value!r} ({source})"
                ) from None
        if key == "n_iter" and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}.n_iter must be an integer, got {value!r} ({source})")
            value = int(value)
        kwargs[key] = value
    return kwargs
