"""`ourvidz up` supervises its children (`Stack.supervise`): a child that dies is restarted after a
backoff, one that keeps failing stops the stack. Real child processes; the clock is passed in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ourvidz.stack import MAX_RESTARTS, RESTART_DELAYS, RESTART_WINDOW, Stack, StackError

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _dead(stack: Stack, name: str) -> None:
    stack.processes[name].wait(timeout=30)


def test_a_dead_child_is_restarted_after_its_backoff_and_a_healthy_one_is_left_alone(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        stack.start("steady", SLEEPER)
        first = stack.start("flaky", EXIT_3)
        _dead(stack, "flaky")
        assert stack.supervise(now=100.0) == [
            f"flaky exited with code 3; restarting in {RESTART_DELAYS[0]:g} s"
        ]
        assert stack.supervise(now=100.0 + RESTART_DELAYS[0] / 2) == []  # still waiting out the backoff
        assert stack.supervise(now=100.0 + RESTART_DELAYS[0]) == ["flaky restarted (restart 1)"]
        assert stack.processes["flaky"] is not first and stack.restarts == {"flaky": 1}
        _dead(stack, "flaky")
        assert stack.supervise(now=110.0) == [
            f"flaky exited with code 3; restarting in {RESTART_DELAYS[1]:g} s"
        ]
        assert stack.processes["steady"].poll() is None and "steady" not in stack.restarts
        log = stack.logs["flaky"].read_text()
        assert "--- ourvidz up: flaky restarted (restart 1) ---" in log
    finally:
        stack.stop()


def test_a_child_that_keeps_failing_stops_the_stack_and_old_exits_are_forgotten(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        stack.start("flaky", EXIT_3)
        now = 0.0
        for _ in range(MAX_RESTARTS):
            _dead(stack, "flaky")
            stack.supervise(now=now)
            now += RESTART_DELAYS[-1]
            assert stack.supervise(now=now)[-1].startswith("flaky restarted")
        _dead(stack, "flaky")
        stack.supervise(now=now + RESTART_WINDOW)  # the earlier exits are out of the window by now
        assert stack.supervise(now=now + RESTART_WINDOW + RESTART_DELAYS[0]) == [
            f"flaky restarted (restart {MAX_RESTARTS + 1})"
        ]
        now += RESTART_WINDOW + RESTART_DELAYS[0]
        for _ in range(MAX_RESTARTS - 1):
            _dead(stack, "flaky")
            stack.supervise(now=now)
            now += RESTART_DELAYS[-1]
            stack.supervise(now=now)
        _dead(stack, "flaky")
        with pytest.raises(StackError, match=f"flaky keeps failing: it exited {MAX_RESTARTS + 1} times"):
            stack.supervise(now=now)
    finally:
        stack.stop()
