"""Every setting of the service, read from COSREC_* environment variables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.bundle import Precision
from service.retention import RetentionPolicy


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
    precision: Precision = Field(
        "fp32",
        description="the bundle's graph served: fp32, or int8 (model.int8.onnx: less CPU a "
        "row, slightly lower accuracy; see docs/bundle.md). CPU only",
    )
    max_batch: int = Field(64, ge=1, description="largest micro-batch of requests")
    batches_in_flight: int = Field(
        2, ge=1, le=8, description="recommendation micro-batches processed at once (1: serial)"
    )
    max_wait_ms: float = Field(
        0.0, ge=0, description="extra wait for a micro-batch to fill (0: greedy)"
    )
    max_queued_requests: int = Field(
        512, ge=1, description="requests waiting per batcher; beyond, 503 with Retry-After"
    )
    max_in_flight: int = Field(
        64, ge=1, description="requests inside a worker at once; beyond, 503 with Retry-After"
    )
    max_batch_events: int = Field(1000, ge=1, description="most events in one Redis write")
    recommend_deadline_ms: float = Field(
        300, gt=0, description="a /recommend answers by then (popularity if Redis is late)"
    )
    events_deadline_ms: float = Field(
        2000, gt=0, description="an /events answers by then (503 if not confirmed)"
    )
    request_read_timeout_s: float = Field(
        10, gt=0, description="a client must send a request's head and body within this"
    )
    keep_alive_s: float = Field(5, gt=0, description="idle keep-alive connections close after")
    shutdown_timeout_s: float = Field(
        10, gt=0, description="on SIGTERM, in-flight requests get this long, then the exit"
    )

    api_key: SecretStr | None = Field(None, description="bearer key for write and admin routes")
    read_api_key: SecretStr | None = Field(
        None, description="bearer key for /recommend (the api_key opens it too)"
    )
    max_n: int = Field(1000, ge=1, description="largest n of /recommend")
    max_exclude: int = Field(10_000, ge=0, description="longest exclude list of /recommend")
    max_events_per_request: int = Field(1000, ge=1, description="most events in one request")
    max_body_bytes: int = Field(2 << 20, ge=1024, description="largest request body (413 above)")
    max_id_length: int = Field(256, ge=1, description="longest user or item id, in characters")
    max_clock_skew_s: float = Field(
        300, ge=0, description="event timestamps may lie this far in the future (422 beyond)"
    )
    max_history: int = Field(200, ge=1, description="events kept per user (sorted by time)")
    max_seen: int = Field(1000, ge=1, description="distinct items kept per user as seen")
    max_event_ids: int = Field(10_000, ge=1, description="event ids remembered per user (dedup)")
    event_id_ttl_s: float = Field(
        86_400, gt=0, description="how long an event id is remembered (the retry window)"
    )
    log_max_len: int = Field(10_000, ge=1, description="newest events kept per user in the log")
    log_max_age_s: float = Field(
        90 * 86_400, ge=0, description="log entries older than this are trimmed (0: never)"
    )
    user_ttl_s: float = Field(
        180 * 86_400, ge=0, description="a user's keys expire after this long idle (0: never)"
    )
    replica_acks: int = Field(
        0, ge=0, description="a 200 on /events waits for this many Redis replicas (WAIT)"
    )
    replica_ack_timeout_ms: int = Field(1000, ge=1, description="how long WAIT may take")
    redis_memory_poll_s: float = Field(5, ge=0, description="how often Redis memory is read")
    redis_memory_warn_ratio: float = Field(
        0.9, gt=0, le=1, description="used / maxmemory at which /readyz reports near_limit"
    )
    history_window_factor: int = Field(
        4, ge=1, description="read the last factor*L events to find the last L known items"
    )
    redis_fallback: bool = Field(
        True, description="serve popularity (source=popularity_fallback) when Redis is down"
    )

    # the item catalogue and the business rules of /recommend (issue 14)
    catalogue: Path | None = Field(
        None, description="start-up catalogue file: JSON Lines, or JSON (docs/service.md)"
    )
    catalogue_poll_s: float = Field(
        1.0, gt=0, description="how often each worker brings its catalogue copy up to date"
    )
    max_catalogue_items: int = Field(1_000_000, ge=1, description="most items in the catalogue")
    max_items_per_request: int = Field(1000, ge=1, description="most items in one PUT /items")
    catalogue_unlisted: Literal["allow", "deny"] = Field(
        "allow", description="items the catalogue does not list: recommendable or never"
    )
    default_only_available: bool = Field(
        True, description="/recommend's only_available when a request does not say"
    )
    default_max_per_category: int = Field(
        0, ge=0, description="/recommend's max_per_category when a request does not say (0: none)"
    )
    default_exclude_categories: str = Field(
        "", description="comma-separated categories left out unless a request says otherwise"
    )
    default_exclude_tags: str = Field(
        "", description="comma-separated tags left out unless a request says otherwise"
    )
    max_filter_values: int = Field(100, ge=1, description="longest category or tag filter list")
    max_candidates: int = Field(10_000, ge=1, description="longest candidates list")

    # online experiments (issue 14)
    variant_name: str = Field(
        "A", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="the serving bundle's variant name"
    )
    variants: str = Field(
        "",
        description="challengers: NAME=BUNDLE_PATH:WEIGHT,...; the serving bundle gets the rest",
    )
    experiment_salt: str = Field(
        "cosrec", min_length=1, max_length=64, description="salt of the users' variant hash"
    )
    shadow_bundle: Path | None = Field(
        None, description="a bundle that scores a sample of requests off the path, never answers"
    )
    shadow_sample: float = Field(0.1, ge=0, le=1, description="share of requests the shadow scores")
    event_types: str = Field(
        "view,click,purchase", description="comma-separated event types /events accepts"
    )
    record_recommendations: bool | None = Field(
        None,
        description="write every answer to the user's recommendations stream (default: when "
        "challengers are configured)",
    )
    max_recommendations_per_user: int = Field(
        100, ge=1, description="newest recommendations kept per user for attribution"
    )

    reload_poll_s: float = Field(2.0, ge=0, description="bundle watch interval (0: off)")
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    bench_floor: bool = Field(False, description="enable POST /bench/floor (benchmarks only)")

    @field_validator("api_key", "read_api_key")
    @classmethod
    def _not_blank(cls, key: SecretStr | None) -> SecretStr | None:
        # An empty COSREC_API_KEY= is a mistake, never "auth off": unset it for that.
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("is empty: set a key, or unset the variable to require none")
        return key

    @model_validator(mode="after")
    def _int8_runs_on_cpu(self) -> Settings:
        # the int8 graph is measured and tested on the CPU provider only; a GPU serves the
        # float graph at 0.68 ms a batch of 64 (bench/results/gpu/serve_cuda.json)
        if self.precision == "int8" and self.device == "cuda":
            raise ValueError("precision int8 runs on the CPU: use device cpu, or precision fp32")
        return self

    @model_validator(mode="after")
    def _replica_acks_need_one_connection(self) -> Settings:
        if self.replica_acks and self.redis_cluster:
            raise ValueError("replica_acks is not supported on a Redis Cluster")
        return self

    @field_validator("variants")
    @classmethod
    def _variants_parse(cls, text: str) -> str:
        parse_variants(text)
        return text

    @field_validator("event_types")
    @classmethod
    def _types_parse(cls, text: str) -> str:
        types = comma_list(text)
        if not types or any(not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", t) for t in types):
            raise ValueError("event types: one or more of [a-z][a-z0-9_]*, comma-separated")
        if "none" in types:
            raise ValueError("event types: 'none' is reserved (events sent without a type)")
        return text

    @model_validator(mode="after")
    def _variant_names_differ(self) -> Settings:
        names = [spec.name for spec in parse_variants(self.variants)]
        if self.variant_name in names:
            raise ValueError(f"variants: {self.variant_name!r} is the serving bundle's name")
        return self

    def variant_specs(self) -> list[VariantSpec]:
        """Every variant, the serving bundle first (weight: what the challengers leave)."""
        challengers = parse_variants(self.variants)
        rest = max(0.0, 1.0 - sum(spec.weight for spec in challengers))
        assert self.bundle is not None
        return [VariantSpec(self.variant_name, self.bundle, rest), *challengers]

    def recording(self) -> bool:
        if self.record_recommendations is not None:
            return self.record_recommendations
        return bool(parse_variants(self.variants))

    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(
            max_history=self.max_history,
            max_seen=self.max_seen,
            max_event_ids=self.max_event_ids,
            event_id_ttl_s=self.event_id_ttl_s,
            log_max_len=self.log_max_len,
            log_max_age_s=self.log_max_age_s,
            user_ttl_s=self.user_ttl_s,
        )


@dataclass(frozen=True)
class VariantSpec:
    name: str
    path: Path
    weight: float


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_variants(text: str) -> list[VariantSpec]:
    """`NAME=PATH:WEIGHT,...` (weights in [0, 1], summing to at most 1, names unique)."""
    specs = []
    for part in comma_list(text):
        name, equals, rest = part.partition("=")
        path, colon, weight = rest.rpartition(":")
        if not equals or not colon or not path:
            raise ValueError(f"variants: {part!r} is not NAME=BUNDLE_PATH:WEIGHT")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name.strip()):
            raise ValueError(f"variants: name {name!r}: 1-32 of letters, digits, _ and -")
        try:
            share = float(weight)
        except ValueError:
            raise ValueError(f"variants: {part!r}: weight {weight!r} is not a number") from None
        if not 0 <= share <= 1:
            raise ValueError(f"variants: {part!r}: weight must lie in [0, 1]")
        specs.append(VariantSpec(name.strip(), Path(path.strip()), share))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError("variants: a name appears twice")
    if sum(spec.weight for spec in specs) > 1 + 1e-9:
        raise ValueError("variants: the weights add up to more than 1")
    return specs
