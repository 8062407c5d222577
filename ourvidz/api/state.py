"""What the gateway process holds for its whole life: settings, database, storage, limits, Prefect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.api.ratelimit import RateLimits
from ourvidz.api.replay import ReplayGuard
from ourvidz.config import Settings
from ourvidz.storage import Storage

if TYPE_CHECKING:
    from ourvidz.api.dispatch import Dispatcher
    from ourvidz.api.realtime import EventHub


@dataclass
class Gateway:
    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    limits: RateLimits
    replays: ReplayGuard
    dispatcher: Dispatcher | None = None
    events: EventHub | None = None


async def gateway(request: Request) -> Gateway:
    """The gateway state; async so that FastAPI resolves it without a thread-pool hop."""
    return request.app.state.gateway
