"""Answers of the hot routes as JSON bytes written once by pydantic's serializer.

A handler that returns a model has FastAPI validate it again, dump it to Python data and then
encode that: three passes over every answer instead of one. The routes keep `response_model`,
so their OpenAPI description does not change."""

from fastapi import Response
from pydantic import BaseModel


def model_response(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")
