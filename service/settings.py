"""Every setting of the service, read from COSREC_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One place for configuration; `cosrec serve` flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="COSREC_", extra="ignore")

    bundle: Path | None = Field(None, description="serving bundle directory (docs/bundle.md)")
    redis_url: str = Field("redis://localhost:6379/0", description="Redis (or cluster seed) URL")
    redis_cluster: bool = Field(False, description="talk to a Redis Cluster")
    redis_sentinels: str | None = Field(
        None,
        pattern=r"^[^,:\s]+:\d+(,[^,:\s]+:\d+)*$",
        description="host:port,... of Redis Sentinels (used instead of redis_url)",
    )
    redis_sentinel_master: str = Field("mymaster", description="master name the Sentinels know")
    redis_timeout_s: float = Field(
        2.0, gt=0, description="limit of one Redis round trip (a pipeline)"
    )
    redis_max_connections: int = Field(64, ge=1, description="Redis connection pool size")
    key_prefix: str = Field(
        "cosrec", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="first part of every Redis key"
    )

    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="onnxruntime provider; cuda falls back to cpu with a warning"
    )
    ort_threads: int = Field(1, ge=1, description="onnxruntime intra-op threads per worker")
    max_batch: int = Field(64, ge=1, description="largest micro-batch of requests")
    batches_in_flight: int = Field(
        2, ge=1, le=8, description="recommendation micro-batches processed at once (1: serial)"
    )
    max_wait_ms: float = Field(
        0.0, ge=0, description="extra wait for a micro-batch to fill (0: greedy)"
    )

    api_key: SecretStr | None = Field(None, description="bearer key for write and admin routes")
    max_n: int = Field(1000, ge=1, description="largest n of /recommend")
    max_exclude: int = Field(10_000, ge=0, description="longest exclude list of /recommend")
    max_events_per_request: int = Field(1000, ge=1, description="most events in one request")
    max_body_bytes: int = Field(2 << 20, ge=1024, description="largest request body (413 above)")
    max_id_length: int = Field(256, ge=1, description="longest user or item id, in characters")
    max_history: int = Field(200, ge=1, description="events kept per user (sorted by time)")
    max_event_ids: int = Field(10_000, ge=1, description="event ids remembered per user (dedup)")
    history_window_factor: int = Field(
        4, ge=1, description="read the last factor*L events to find the last L known items"
    )
    redis_fallback: bool = Field(
        True, description="serve popularity (source=popularity_fallback) when Redis is down"
    )

    reload_poll_s: float = Field(2.0, ge=0, description="bundle watch interval (0: off)")
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    bench_floor: bool = Field(False, description="enable POST /bench/floor (benchmarks only)")
