"""Per-user rate limits with the `limits` library: memory storage, or Redis when configured.

Each response carries X-RateLimit-Limit / -Remaining / -Reset; a refusal is 429 with Retry-After.
"""

from __future__ import annotations

import math
import time
import uuid

from limits import RateLimitItem, parse, storage, strategies
from starlette.responses import Response

from ourvidz.api.errors import ApiError
from ourvidz.config import Settings


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        backend = storage.storage_from_string(settings.redis_url or "memory://")
        self._limiter = strategies.MovingWindowRateLimiter(backend)
        self.items = {
            "jobs": parse(settings.rate_limit_jobs),
            "enhance": parse(settings.rate_limit_enhance),
            "health": parse(settings.rate_limit_health),
        }

    def hit(self, bucket: str, user_id: uuid.UUID, response: Response) -> None:
        """Count one request of `user_id` against `bucket`; raise 429 once the limit is reached."""
        item = self.items[bucket]
        allowed = self._limiter.hit(item, bucket, str(user_id))
        reset, remaining = self._limiter.get_window_stats(item, bucket, str(user_id))
        headers = _headers(item, remaining, reset)
        if not allowed:
            retry = str(max(1, math.ceil(reset - time.time())))
            raise ApiError(
                429,
                "RATE_LIMITED",
                f"at most {item} for this user",
                headers={**headers, "retry-after": retry},
            )
        response.headers.update(headers)


def _headers(item: RateLimitItem, remaining: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(item.amount),
        "x-ratelimit-remaining": str(max(0, remaining)),
        "x-ratelimit-reset": str(math.ceil(reset)),
    }
