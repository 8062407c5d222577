"""Cancel flags of the flow runs running in this process, keyed by flow run id.

The worker sets a run's flag when Prefect reports the run Cancelling; the generate task hands the
same flag to the generation runtime, which stops at the next denoising step.
"""

from __future__ import annotations

import threading
import uuid

_flags: dict[uuid.UUID, threading.Event] = {}
_lock = threading.Lock()


def cancel_flag(flow_run_id: uuid.UUID) -> threading.Event:
    with _lock:
        return _flags.setdefault(flow_run_id, threading.Event())


def forget(flow_run_id: uuid.UUID) -> None:
    with _lock:
        _flags.pop(flow_run_id, None)
