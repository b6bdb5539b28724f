"""What ``POST /control`` may change while the tester runs: delays, fault rates, pause."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from common.durations import format_duration
from common.settings import Duration
from tester.choices import FaultRates
from tester.settings import TesterSettings

T = TypeVar("T")


class InvalidControl(ValueError):
    """The change was refused; nothing was applied."""


@dataclass(frozen=True)
class Knobs:
    delay_min: float
    delay_max: float
    rates: FaultRates
    paused: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.delay_min <= self.delay_max:
            raise ValueError("delay_min must be >= 0 and not above delay_max")

    @classmethod
    def from_settings(cls, settings: TesterSettings) -> Knobs:
        return cls(
            delay_min=settings.tester_delay_min,
            delay_max=settings.tester_delay_max,
            rates=FaultRates(
                error=settings.tester_error_rate,
                hang=settings.tester_hang_rate,
                garbage=settings.tester_garbage_rate,
            ),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "delay_min": format_duration(self.delay_min),
            "delay_max": format_duration(self.delay_max),
            "error_rate": self.rates.error,
            "hang_rate": self.rates.hang,
            "garbage_rate": self.rates.garbage,
            "paused": self.paused,
        }


class ControlChange(BaseModel):
    """The body of ``POST /control``; every field optional, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_min: Duration | None = None
    delay_max: Duration | None = None
    error_rate: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    hang_rate: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    garbage_rate: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    paused: StrictBool | None = None


def apply_control(current: Knobs, body: bytes) -> Knobs:
    """The knobs after the change in ``body`` (JSON), or :class:`InvalidControl`."""
    try:
        change = ControlChange.model_validate_json(body or b"null")
    except ValidationError as error:
        raise InvalidControl(_describe(error)) from None
    try:
        return replace(
            current,
            delay_min=_pick(change.delay_min, current.delay_min),
            delay_max=_pick(change.delay_max, current.delay_max),
            rates=FaultRates(
                error=_pick(change.error_rate, current.rates.error),
                hang=_pick(change.hang_rate, current.rates.hang),
                garbage=_pick(change.garbage_rate, current.rates.garbage),
            ),
            paused=_pick(change.paused, current.paused),
        )
    except ValueError as error:
        raise InvalidControl(str(error)) from None


def _pick(new: T | None, old: T) -> T:
    return old if new is None else new


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
