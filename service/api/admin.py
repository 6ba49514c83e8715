"""POST /admin/reload: load the bundle again."""

from fastapi import APIRouter, Depends, Response

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
