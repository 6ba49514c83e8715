"""POST /admin/reload: load the bundle again; POST /admin/rollback: serve an earlier one."""

import asyncio

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from contract.registry import POINTER, registry_of
from service.api.deps import ServicesDep, require_key
from service.schemas import ReloadResponse

router = APIRouter(tags=["admin"], dependencies=[Depends(require_key)])


@router.post(
    "/admin/reload",
    responses={409: {"model": ReloadResponse, "description": "refused; old bundle serves"}},
    response_model_exclude_none=True,
)
async def reload(services: ServicesDep, response: Response) -> ReloadResponse:
    """Load the bundle path again; a bundle that fails to verify leaves the old one serving."""
    result = await services.holder.reload()
    if not result.reloaded:
        response.status_code = 409
    return ReloadResponse.model_validate(result, from_attributes=True)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(
        None, max_length=200, description="a bundle of the registry; default: the one before"
    )


@router.post(
    "/admin/rollback",
    responses={409: {"model": ReloadResponse, "description": "refused; the bundle serves on"}},
    response_model_exclude_none=True,
)
async def rollback(
    services: ServicesDep, response: Response, body: RollbackRequest | None = None
) -> ReloadResponse:
    """Serve an earlier bundle of the registry (COSREC_BUNDLE is REGISTRY/current): the
    pointer moves for every worker and replica (their watchers follow it), then this worker
    reloads."""
    holder = services.holder
    registry = registry_of(holder.path)
    version = body.version if body is not None else None
    if registry is None:
        response.status_code = 409
        return ReloadResponse(
            reloaded=False,
            model_version=holder.current.model_version,
            error=f"{holder.path} is not a registry's `{POINTER}` pointer",
        )
    try:
        await asyncio.to_thread(registry.rollback, version)
    except (ValueError, OSError) as error:
        response.status_code = 409
        return ReloadResponse(
            reloaded=False, model_version=holder.current.model_version, error=str(error)
        )
    result = await holder.reload()
    if not result.reloaded:
        response.status_code = 409
    return ReloadResponse.model_validate(result, from_attributes=True)
