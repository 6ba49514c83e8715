"""Request and response bodies. Limits come from the settings, so OpenAPI shows the real ones."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from service.catalogue import ID_PATTERN, MAX_TIMESTAMP, Label, item_record_model
from service.ingest import IncomingEvent
from service.settings import Settings, comma_list


# A TypedDict, not a model: /recommend builds up to max_n of them per answer, and pydantic
# validates a dict into a dict in half the time it makes a model of one (measured here).
class ScoredItem(TypedDict):
    item_id: str
    score: float  # the model's score; for `popularity` items the popularity count or value
    reason: Literal["model", "popularity"]  # the model ranked it, or popularity topped up


class RecommendResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    model_version: str
    source: str = Field(
        description="model; popularity (unknown user, no history); "
        "popularity_fallback (Redis unreachable)"
    )
    recommendation_id: str = Field(
        description="name it in /events (recommendation_id) to attribute an interaction to it"
    )
    variant: str = Field(description="the experiment variant that answered")


class ItemWritten(BaseModel):
    item_id: str
    version: int = Field(description="the catalogue's version after the write")


class ItemsWritten(BaseModel):
    written: int = Field(description="items stored (created or replaced)")
    refused: int = Field(description="new items refused: the catalogue is full")
    version: int = Field(description="the catalogue's version after the write")


class ItemDeleted(BaseModel):
    item_id: str
    deleted: bool = Field(description="false: the catalogue did not hold it")
    version: int


class ItemView(BaseModel):
    item_id: str
    attributes: dict = Field(description="as stored in Redis")


class EventsResponse(BaseModel):
    accepted: int = Field(description="events stored now")
    duplicates: int = Field(description="events whose event_id was stored before (not counted)")
    conflicts: int = Field(
        description="events whose event_id was stored before with another item or timestamp "
        "(not stored: an id is used once)"
    )
    unknown_items: int = Field(description="stored events whose item the model does not know")


class ReloadResponse(BaseModel):
    reloaded: bool
    model_version: str = Field(description="the version serving after the attempt")
    error: str | None = Field(None, description="why the bundle was refused (absent when loaded)")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class RedisMemory(BaseModel):
    used_bytes: int
    max_bytes: int = Field(description="Redis maxmemory; 0: no limit")
    near_limit: bool = Field(description="used >= COSREC_REDIS_MEMORY_WARN_RATIO of max")


class ReadyResponse(BaseModel):
    ready: bool
    redis: Literal["ok", "unreachable"]
    model_version: str = Field(description="the serving bundle's version")
    precision: Literal["fp32", "int8"] = Field(description="its graph that serves")
    redis_memory: RedisMemory | None = Field(
        None, description="as last read (every COSREC_REDIS_MEMORY_POLL_S); absent if unknown"
    )


class RecommendInput(Protocol):
    """A validated /recommend body (its class comes from `request_schemas`)."""

    user_id: str
    n: int
    exclude_seen: bool
    exclude: list[str]
    include_categories: list[str] | None
    exclude_categories: list[str] | None
    include_tags: list[str] | None
    exclude_tags: list[str] | None
    only_available: bool | None
    candidates: list[str] | None
    max_per_category: int | None
    model_fields_set: set[str]


class EventsInput(Protocol):
    """A validated /events body (its class comes from `request_schemas`)."""

    events: Sequence[IncomingEvent]


class ItemsInput(Protocol):
    items: Sequence


@dataclass(frozen=True)
class RequestSchemas:
    recommend: type[BaseModel]
    events: type[BaseModel]
    items: type[BaseModel]


def request_schemas(settings: Settings) -> RequestSchemas:
    Id = Annotated[
        str,
        Field(min_length=1, max_length=settings.max_id_length, pattern=ID_PATTERN),
    ]
    strict = ConfigDict(extra="forbid")
    skew = settings.max_clock_skew_s
    EventType = Literal[tuple(comma_list(settings.event_types))]  # type: ignore[valid-type]

    def not_far_in_the_future(timestamp: float | None) -> float | None:
        # An event from the future would stay the user's newest through every later event.
        if timestamp is not None and timestamp > time.time() + skew:
            raise ValueError(f"lies more than {skew:g} s in the future (COSREC_MAX_CLOCK_SKEW_S)")
        return timestamp

    Labels = Annotated[list[Label], Field(max_length=settings.max_filter_values)] | None

    class RecommendRequest(BaseModel):
        model_config = strict
        user_id: Id
        n: int = Field(10, ge=1, le=settings.max_n)
        exclude_seen: bool = True
        exclude: list[Id] = Field(default_factory=list, max_length=settings.max_exclude)
        include_categories: Labels = Field(
            None, description="only items of at least one of these categories"
        )
        exclude_categories: Labels = Field(None, description="no item of these categories")
        include_tags: Labels = Field(None, description="only items with at least one of these")
        exclude_tags: Labels = Field(None, description="no item with one of these tags")
        only_available: bool | None = Field(
            None, description="only items available now (the catalogue's available and times)"
        )
        candidates: list[Id] | None = Field(
            None, max_length=settings.max_candidates, description="rank only these items"
        )
        max_per_category: int | None = Field(
            None, ge=0, le=settings.max_n, description="at most this many items of a category"
        )

    class Event(BaseModel):
        model_config = strict
        user_id: Id
        item_id: Id
        timestamp: Annotated[
            float | None,
            Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False, description="Unix seconds"),
            AfterValidator(not_far_in_the_future),
        ] = None
        event_id: Id | None = Field(None, description="retries with the same id count once")
        type: EventType | None = Field(None, description="what the user did")
        recommendation_id: Id | None = Field(
            None, description="the recommendation that showed the item (attribution)"
        )

    class EventsRequest(BaseModel):
        model_config = strict
        events: list[Event] = Field(min_length=1, max_length=settings.max_events_per_request)

    class ItemsRequest(BaseModel):
        model_config = strict
        items: list[item_record_model(settings.max_id_length)] = Field(  # type: ignore[valid-type]
            min_length=1, max_length=settings.max_items_per_request
        )

    return RequestSchemas(RecommendRequest, EventsRequest, ItemsRequest)
