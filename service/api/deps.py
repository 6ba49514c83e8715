"""What the routes depend on: the metrics, this worker's services, the API key check.

Every dependency is async: FastAPI runs a plain `def` one in a thread pool, a thread hand-off
on every request.
"""

import hmac
from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.admission import client_gone
from service.lifespan import Services
from service.metrics import Metrics
from service.settings import Settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def services_of(request: Request) -> Services:
    """The worker's services, built by the lifespan (service.lifespan).

    /recommend and /events call this instead of depending on ServicesDep: one more FastAPI
    dependency costs ~20 us a request here (FastAPI 0.165), 2-4% of a /recommend.
    """
    return request.app.state.services


async def get_services(request: Request) -> Services:
    return services_of(request)


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServicesDep = Annotated[Services, Depends(get_services)]

bearer = HTTPBearer(
    auto_error=False, description="COSREC_API_KEY (writes, admin) or COSREC_READ_API_KEY, when set"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_key(request: Request, credentials: Credentials) -> None:
    """401 unless the request carries the API key; anyone passes when no key is set."""
    # the settings straight from the app, not through one more dependency (see services_of)
    settings: Settings = request.app.state.settings
    if settings.api_key is not None:
        _check(credentials, [settings.api_key])


async def require_read_key(request: Request, credentials: Credentials) -> None:
    """401 unless the request carries the read key or the API key (mounted only when a read
    key is set: no cost on /recommend otherwise)."""
    settings: Settings = request.app.state.settings
    _check(credentials, [key for key in (settings.read_api_key, settings.api_key) if key])


def _check(credentials: HTTPAuthorizationCredentials | None, keys: list[SecretStr]) -> None:
    given = credentials.credentials.encode() if credentials is not None else b""
    # compare_digest: the time taken does not reveal how much of a key matched; every key is
    # compared, so neither does which one was tried
    matches = [hmac.compare_digest(given, key.get_secret_value().encode()) for key in keys]
    if not any(matches):
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})


def disconnect_probe(request: Request) -> Callable[[], bool]:
    """A check, for later, that the request's client has closed its connection."""
    return partial(client_gone, request.receive)
