"""The tester's configuration, read once in its entry point."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from common.durations import format_duration
from common.settings import CallbackAuthSettings, Duration


class TesterSettings(CallbackAuthSettings):
    """Defaults reproduce the original Go tester; every other value is a knob for tests."""

    callback_endpoint: str = Field(
        pattern=r"^https?://\S+$",
        description="producer base URL; the tester POSTs to CALLBACK_ENDPOINT + /callback",
    )
    # A service in a container must listen on every interface; TESTER_HOST narrows it.
    tester_host: str = Field(
        "0.0.0.0",  # noqa: S104 - containers listen on every interface
        min_length=1,
        description="address the status API binds",
    )
    tester_port: int = Field(
        9010, ge=0, le=65535, description="status API port (0: any free port, logged at start)"
    )
    tester_interval: Duration = Field(5.0, gt=0, description="time between two callbacks")
    tester_id_range: int = Field(
        100, ge=1, le=2**63 - 1, description="callback ids are drawn from 0 .. TESTER_ID_RANGE-1"
    )
    tester_max_ids: int = Field(
        199,
        ge=0,
        le=1_000_000,
        description="a callback carries a random count 0 .. TESTER_MAX_IDS of ids (repeats kept)",
    )
    tester_delay_min: Duration = Field(
        0.3, description="shortest delay before GET /objects/{id} answers"
    )
    tester_delay_max: Duration = Field(
        4.3, description="longest delay before GET /objects/{id} answers (uniform in between)"
    )
    tester_seed: int | None = Field(
        None, description="seed for reproducible randomness; unset: seeded from the OS"
    )
    tester_error_rate: float = Field(
        0.0, ge=0, le=1, description="fraction of /objects answers that are 500"
    )
    tester_hang_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of /objects requests never answered until the client gives up",
    )
    tester_garbage_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of /objects answers that are 200 with an invalid body",
    )
    tester_callback_timeout: Duration = Field(
        1.0, gt=0, description="client timeout of one callback POST, whole exchange"
    )
    tester_callbacks: int = Field(
        0, ge=0, description="stop sending after this many callbacks (0: never stop)"
    )
    tester_ledger_size: int = Field(
        1000, ge=1, le=10_000_000, description="how many callback records GET /ledger keeps"
    )

    @field_validator("tester_delay_max")
    @classmethod
    def _max_not_below_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("tester_delay_min")
        if low is not None and value < low:
            raise ValueError(f"must not be below TESTER_DELAY_MIN ({format_duration(low)})")
        return value

    @field_validator("tester_garbage_rate")
    @classmethod
    def _rates_fit_in_one(cls, value: float, info: ValidationInfo) -> float:
        error_rate = info.data.get("tester_error_rate")
        hang_rate = info.data.get("tester_hang_rate")
        if error_rate is not None and hang_rate is not None and error_rate + hang_rate + value > 1:
            raise ValueError(
                "TESTER_ERROR_RATE + TESTER_HANG_RATE + TESTER_GARBAGE_RATE must not exceed 1"
            )
        return value

    @property
    def callback_url(self) -> str:
        return self.callback_endpoint.rstrip("/") + "/callback"
