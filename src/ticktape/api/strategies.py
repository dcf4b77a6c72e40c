"""``GET /api/strategies``: the registered strategies and their parameter schemas.

The registry is built once at start-up (built-ins, ``TICKTAPE_STRATEGIES_DIR``,
the ``ticktape.strategies`` entry points) and kept on the app; it holds classes,
never session state.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ticktape.strategies import StrategyRegistry

router = APIRouter(tags=["strategies"])


class StrategyOut(BaseModel):
    name: str
    description: str
    forms: list[str] = Field(description="'columnar' and/or 'event'; the first is the default")
    origin: str = Field(description="builtin, directory:<file> or entry_point:<name>")
    params_schema: dict[str, Any] = Field(description="JSON schema of the parameters")


class StrategyListOut(BaseModel):
    strategies: list[StrategyOut]


async def get_registry(request: Request) -> StrategyRegistry:
    registry: StrategyRegistry = request.app.state.strategies
    return registry


@router.get("/api/strategies", response_model=StrategyListOut)
async def list_strategies(
    registry: Annotated[StrategyRegistry, Depends(get_registry)],
) -> StrategyListOut:
    """Every registered strategy, by name, with its parameter schema."""
    return StrategyListOut(strategies=[StrategyOut.model_validate(d) for d in registry.describe()])
