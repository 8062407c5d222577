"""schemathesis hooks of the gateway fuzz run (`SCHEMATHESIS_HOOKS=tests.schemathesis_hooks`): every
`job-callback` it sends is signed as a worker signs it, so the fuzzed bodies reach the parser instead
of stopping at the signature check."""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from schemathesis.core import NotSet

from tests.signing import callback_headers

SECRET_ENV = "OURVIDZ_FUZZ_CALLBACK_SECRET"


def _raw(body: Any) -> bytes:
    """The bytes sent for a case's body: negative cases may be raw bytes or text already."""
    if isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


def _signable(raw: bytes) -> bool:
    """Standard Webhooks signs text: a body that is not UTF-8 cannot carry a valid signature."""
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if not case.path.endswith("/job-callback"):
        return
    raw = _raw(case.body)
    kwargs["data"] = raw  # the bytes signed are the bytes sent
    if _signable(raw):
        case.headers = {**(case.headers or {}), **callback_headers(os.environ[SECRET_ENV], raw)}


@schemathesis.check
def signed_callbacks_pass(context: Any, response: Any, case: Any) -> None:
    """The hook's signatures are accepted: a fuzzed callback is judged on its body, never refused as
    unsigned (otherwise this run would test nothing behind the signature check)."""
    if case.path.endswith("/job-callback") and response.status_code == 401 and _signable(_raw(case.body)):
        raise AssertionError(f"the signed callback was refused: {response.text[:200]}")
