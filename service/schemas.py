"""Request and response bodies. Limits come from the settings, so OpenAPI shows the real ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from service.ingest import IncomingEvent
from service.settings import Settings

# Unix seconds; the bound keeps a millisecond timestamp sent by mistake out (year 5138).
MAX_TIMESTAMP = 1e11


# A TypedDict, not a model: /recommend builds up to max_n of them per answer, and pydantic
# validates a dict into a dict in half the time it makes a model of one (measured here).
class ScoredItem(TypedDict):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    user_id: str
    items: list[ScoredItem]
    model_version: str
    source: str = Field(
        description="model; popularity (unknown user, no history); "
        "popularity_fallback (Redis unreachable)"
    )


class EventsResponse(BaseModel):
    accepted: int = Field(description="events stored now")
    duplicates: int = Field(description="events whose event_id was stored before (not counted)")
    unknown_items: int = Field(description="stored events whose item the model does not know")


class ReloadResponse(BaseModel):
    reloaded: bool
    model_version: str = Field(description="the version serving after the attempt")
    error: str | None = Field(None, description="why the bundle was refused (absent when loaded)")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    ready: bool
    redis: Literal["ok", "unreachable"]
    model_version: str = Field(description="the serving bundle's version")


class RecommendInput(Protocol):
    """A validated /recommend body (its class comes from `request_schemas`)."""

    user_id: str
    n: int
    exclude_seen: bool
    exclude: list[str]


class EventsInput(Protocol):
    """A validated /events body (its class comes from `request_schemas`)."""

    events: Sequence[IncomingEvent]


@dataclass(frozen=True)
class RequestSchemas:
    recommend: type[BaseModel]
    events: type[BaseModel]


def request_schemas(settings: Settings) -> RequestSchemas:
    Id = Annotated[str, Field(min_length=1, max_length=settings.max_id_length)]
    strict = ConfigDict(extra="forbid")

    class RecommendRequest(BaseModel):
        model_config = strict
        user_id: Id
        n: int = Field(10, ge=1, le=settings.max_n)
        exclude_seen: bool = True
        exclude: list[Id] = Field(default_factory=list, max_length=settings.max_exclude)

    class Event(BaseModel):
        model_config = strict
        user_id: Id
        item_id: Id
        timestamp: float | None = Field(
            None, ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False, description="Unix seconds"
        )
        event_id: Id | None = Field(None, description="retries with the same id count once")

    class EventsRequest(BaseModel):
        model_config = strict
        events: list[Event] = Field(min_length=1, max_length=settings.max_events_per_request)

    return RequestSchemas(RecommendRequest, EventsRequest)
