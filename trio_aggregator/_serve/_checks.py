"""The rules the app's settings follow: one set, for the options and the command line.

`ServeOptions`, `DemoOptions`, `LineSplitter` and the ``trio-aggregator`` arguments all
check their values here, and these rules are those of `trio_aggregator.AggregatorConfig`:
a count is an `int` (a `bool` is not), a duration a number of seconds (an `int` or a
`float`, not a `bool`, not NaN), a flag a `bool`. A value of the wrong type raises
`TypeError`, one out of range `ValueError`; the message names the setting. The settings
that become the aggregator's are, in addition, checked by `AggregatorConfig` itself
(`ServeOptions` builds one at construction).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import attrs

    Validator = Callable[[Any, attrs.Attribute[Any], Any], None]

__all__ = [
    "check_count",
    "check_flag",
    "check_seconds",
    "count",
    "flag",
    "one_of",
    "seconds",
]


def check_count(name: str, value: object, *, minimum: int = 1, maximum: int | None = None) -> int:
    """*value*, an `int` of at least *minimum* (and at most *maximum*, if given).

    Raises:
        TypeError: Not an `int` (or a `bool`).
        ValueError: Less than *minimum*, or more than *maximum*.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum:,}, not {value:,}")
    return value


def check_seconds(
    name: str,
    value: object,
    *,
    positive: bool = False,
    finite: bool = False,
    at_least: float = 0.0,
) -> float:
    """*value*, a number of seconds: >= 0 (> 0 if *positive*; not infinite if *finite*).

    With *at_least*, a value other than 0 must be at least that (a tiny interval would
    spin the CPU); 0 stays allowed unless *positive*.

    Raises:
        TypeError: Not an `int` or a `float` (or a `bool`).
        ValueError: NaN, negative (zero if *positive*), infinite if *finite*, or
            below *at_least*.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, not {value}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite, not {value}")
    if 0 < value < at_least:
        zero = "" if positive else "0 or "
        raise ValueError(f"{name} must be {zero}>= {at_least:g}, not {value:g}")
    return float(value)


def check_flag(name: str, value: object) -> bool:
    """*value*, a `bool`.

    Raises:
        TypeError: Not a `bool`.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def count(*, minimum: int = 1, maximum: int | None = None, optional: bool = False) -> Validator:
    """An attrs validator: `check_count`, letting None through if *optional*."""

    def validate(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if not (optional and value is None):
            check_count(attr.name, value, minimum=minimum, maximum=maximum)

    return validate


def seconds(*, positive: bool = False, optional: bool = False, at_least: float = 0.0) -> Validator:
    """An attrs validator: `check_seconds`, letting None through if *optional*."""

    def validate(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if not (optional and value is None):
            check_seconds(attr.name, value, positive=positive, at_least=at_least)

    return validate


def flag(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: `check_flag`."""
    check_flag(attr.name, value)


def one_of(choices: tuple[str, ...]) -> Validator:
    """An attrs validator: the value is one of *choices* (`ValueError` naming them if not)."""

    def validate(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            names = ", ".join(repr(choice) for choice in choices)
            raise ValueError(f"{attr.name} must be one of {names}, not {value!r}")

    return validate
