"""The gateway's access log, without credentials: WebSocket clients put their JWT in the query string."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

SECRET_PARAMETER = re.compile(r"((?:access_token|token|apikey|api_key)=)[^&\s]*", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return SECRET_PARAMETER.sub(rf"\g<1>{REDACTED}", text)


class RedactCredentials(logging.Filter):
    """Rewrites the arguments of uvicorn's records: the access line's path, and the path of the
    '"WebSocket <path>" [accepted]' line it logs as an error-log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with both of its handlers filtered."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_credentials"] = {"()": RedactCredentials}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_credentials"]
    return config
