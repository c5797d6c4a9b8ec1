"""Shared pydantic helpers for the keeper's input files: number types that refuse booleans, and
the first problem of a `ValidationError` as plain data, for each loader to word in its own
one-line message (pydantic's own multi-line text never reaches the user)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, get_args

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError


def _number(value: Any) -> Any:
    if isinstance(value, bool):  # YAML `true` is not the number 1
        raise PydanticCustomError("float_type", "not a number")
    return value


def _integer(value: Any) -> Any:
    """An int, a float with no fraction, or a decimal, 0x hex, 0o or 0b string (as Python's
    int(text, 0) reads it)."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "not an integer")
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            raise PydanticCustomError("int_parsing", "not an integer") from None
    if isinstance(value, float) and value.is_integer():  # 1e6, also above pydantic's 64 bits
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integer)]
Float = Annotated[float, BeforeValidator(_number)]


@dataclass(frozen=True)
class Problem:
    """The first error pydantic found: where (`loc`), what (`kind`, pydantic's error type, or
    `value_error` with `text` the wording a validator raised), and the offending `value`."""

    loc: tuple[str | int, ...]
    kind: str
    value: Any
    ctx: dict[str, Any]

    @property
    def text(self) -> str:
        """A validator's own ValueError text (kind `value_error`), else pydantic's message."""
        error = self.ctx.get("error")
        return str(error) if error is not None else self.kind


def checksummed(value: Any) -> str:
    """`value` as a checksummed 20-byte hex address (pydantic error `address` if it is not one);
    mixed case must carry a correct EIP-55 checksum (error `checksum`: a typo), all lower or all
    upper case carries none and is accepted."""
    from eth_utils import is_address, to_checksum_address

    if not isinstance(value, str) or not is_address(value):
        raise PydanticCustomError("address", "not an address")
    digits = value[2:]
    if digits not in (digits.lower(), digits.upper()) and value != to_checksum_address(value):
        raise PydanticCustomError("checksum", "wrong EIP-55 checksum")
    return str(to_checksum_address(value))


def first_problem(e: ValidationError) -> Problem:
    err = e.errors(include_url=False)[0]
    return Problem(tuple(err["loc"]), err["type"], err.get("input"), dict(err.get("ctx") or {}))


def bounds(model: type[BaseModel], name: str) -> tuple[float, float]:
    """The [ge, le] of a field (an absent bound is -inf / inf)."""
    lo, hi = float("-inf"), float("inf")
    for m in model.model_fields[name].metadata:
        lo = getattr(m, "ge", lo) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", hi) if getattr(m, "le", None) is not None else hi
    return lo, hi


def is_integer_field(model: type[BaseModel], name: str) -> bool:
    """Whether a field holds an int (possibly Annotated, possibly optional)."""

    def ints(annotation: Any) -> bool:
        return annotation is int or any(ints(a) for a in get_args(annotation))

    return ints(model.model_fields[name].annotation)
