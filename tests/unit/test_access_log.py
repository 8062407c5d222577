"""The gateway's log lines keep credentials out: uvicorn's access and WebSocket records, as it logs them."""

from __future__ import annotations

import logging

from ourvidz.api.logs import RedactCredentials, log_config


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_access_and_websocket_lines_lose_their_token_and_keep_the_rest() -> None:
    access = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                     "/realtime?x=1&access_token=aaa.bbb.ccc&y=2", "1.1", 101)  # fmt: skip
    accepted = _record("uvicorn.error", '%s - "WebSocket %s" [accepted]', ("127.0.0.1", 5000),
                       "/functions/v1/realtime?ACCESS_TOKEN=aaa.bbb.ccc")  # fmt: skip
    for record in (access, accepted):
        assert RedactCredentials().filter(record)
    assert access.getMessage() == (
        '127.0.0.1:5000 - "GET /realtime?x=1&access_token=[redacted]&y=2 HTTP/1.1" 101'
    )
    assert "aaa.bbb.ccc" not in accepted.getMessage()
    assert accepted.getMessage().endswith('realtime?ACCESS_TOKEN=[redacted]" [accepted]')


def test_every_uvicorn_handler_is_filtered() -> None:
    config = log_config()
    assert {name: handler["filters"] for name, handler in config["handlers"].items()} == {
        "default": ["redact_credentials"],
        "access": ["redact_credentials"],
    }
