"""The HTTP contract as pydantic models, for the OpenAPI document, and the JSON error answer.

``/callback`` reads and validates its body itself (orjson, no pydantic on the hot path); these
models describe the same contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, Field

from common.messages import INT64_MAX, INT64_MIN
from producer.view import BrokerState

# OpenAPI's schema model stores bounds as floats (2**63 - 1 prints as 9.223372036854776e18);
# "format: int64" is the exact statement of the range.
ObjectId = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX, json_schema_extra={"format": "int64"})]


class CallbackBody(BaseModel):
    object_ids: list[ObjectId] = Field(
        description="ids seen by the tester; repeats are removed, order of first occurrence kept",
        examples=[[1, 2, 3, 2]],
    )


class CallbackAccepted(BaseModel):
    callback_id: str = Field(description="id of this callback, carried by its work messages")
    accepted: int = Field(description="number of unique ids made durable")
    spooled: bool = Field(
        description="true: the broker did not confirm in time, the ids are in the local spool "
        "and the relay will publish them"
    )


class ErrorBody(BaseModel):
    error: str = Field(description="stable error code", examples=["invalid_ids"])
    detail: str = Field(description="what was wrong, for a human")


class HealthBody(BaseModel):
    status: Literal["alive"]


class ReadyBody(BaseModel):
    ready: bool = Field(description="a callback would be made durable now (broker or spool)")
    broker: BrokerState
    spool_depth: int = Field(description="messages in the spool waiting for the relay")
    spool_writable: bool


def error_response(status: int, error: str, detail: str) -> Response:
    """The JSON answer of every refusal: ``{"error": <stable code>, "detail": <for a human>}``."""
    return Response(
        orjson.dumps({"error": error, "detail": detail}),
        status_code=status,
        media_type="application/json",
    )


def described(description: str) -> dict[str, Any]:
    """An error status in the OpenAPI ``responses`` of a route."""
    return {"model": ErrorBody, "description": description}
