"""The store settings: ``STORE`` picks one; ``REDIS_*`` configure the Redis one."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings

from common import tls
from common.secrets import SECRET, mask_uri
from common.settings import NODE_LIST_ERROR, Duration, ServiceSettings
from common.store.redis_url import RedisTarget, RedisUrlError, parse_redis_url

StoreKind = Literal["postgres", "redis"]


class StoreChoice(BaseSettings):
    """``STORE`` alone: the routine reads it before (and instead of) its PostgreSQL settings."""

    model_config = ServiceSettings.model_config

    store: StoreKind = Field(
        "postgres",
        description="where last_seen is kept: postgres (the object table, expired by the "
        "routine) or redis (one key per object that expires by itself; no routine)",
    )


class RedisSettings(ServiceSettings):
    redis_url: str = Field(
        "",
        description="STORE=redis: redis://[user:password@]host:port/db, rediss:// for TLS; a "
        "Redis Cluster: a comma-separated list of seed nodes (credentials in the first) or "
        "REDIS_CLUSTER=true",
        repr=False,
        json_schema_extra=SECRET,
    )
    redis_cluster: bool = Field(
        False, description="STORE=redis: REDIS_URL names a Redis Cluster (implied by several nodes)"
    )
    redis_key_prefix: str = Field(
        "object:",
        min_length=1,
        max_length=100,
        description="STORE=redis: keys are <prefix><id>",
    )
    redis_tls_ca: Path | None = Field(
        None,
        description="rediss://: CA file (PEM) the server's certificate must chain to; unset: the "
        "system's trusted CAs",
    )
    redis_tls_cert: Path | None = Field(
        None, description="rediss://: client certificate (PEM) for servers that ask for one"
    )
    redis_tls_key: Path | None = Field(None, description="rediss://: the client certificate's key")
    redis_min_replicas: int = Field(
        0,
        ge=0,
        le=100,
        description="STORE=redis: before acking, WAIT until this many replicas have each batch "
        "(0: the primary's acknowledgement; one node, not with REDIS_CLUSTER)",
    )
    redis_wait_timeout: Duration = Field(
        1.0, gt=0, description="REDIS_MIN_REPLICAS: how long one WAIT may take before a retry"
    )
    object_ttl: Duration = Field(
        30.0, gt=0, description="delete objects whose last_seen is older than this"
    )

    @field_validator("redis_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if value:
            try:
                parse_redis_url(value)
            except RedisUrlError as error:
                raise PydanticCustomError(NODE_LIST_ERROR, str(error)) from None
        return value

    @model_validator(mode="after")
    def _redis_consistent(self) -> RedisSettings:
        if not self.redis_url:
            if any((self.redis_tls_ca, self.redis_tls_cert, self.redis_tls_key)):
                raise ValueError("REDIS_TLS_* settings need a rediss:// REDIS_URL")
            return self
        target = self.redis_target
        if target.db and self.redis_cluster:
            raise ValueError("REDIS_CLUSTER: Redis Cluster has database 0 only (REDIS_URL's /db)")
        if self.redis_min_replicas and self.redis_is_cluster:
            raise ValueError("REDIS_MIN_REPLICAS: supported on one Redis node, not on a cluster")
        self.redis_ssl_context()
        return self

    @property
    def redis_target(self) -> RedisTarget:
        return parse_redis_url(self.redis_url)

    @property
    def redis_is_cluster(self) -> bool:
        return self.redis_cluster or self.redis_target.several

    @property
    def redis_url_masked(self) -> str:
        return mask_uri(self.redis_url)

    def redis_ssl_context(self) -> ssl.SSLContext | None:
        """Checks the ``REDIS_TLS_*`` files load; ``None`` for ``redis://``."""
        files = (self.redis_tls_ca, self.redis_tls_cert, self.redis_tls_key)
        if not self.redis_target.tls:
            if any(files):
                raise ValueError("REDIS_TLS_* settings need a rediss:// REDIS_URL")
            return None
        if self.redis_tls_key is not None and self.redis_tls_cert is None:
            raise ValueError("REDIS_TLS_KEY needs REDIS_TLS_CERT")
        return tls.client_ssl_context("REDIS_TLS", *files)
