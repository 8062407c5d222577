"""Crash recovery as Prefect automations, created and kept up to date by `ourvidz bootstrap`.

1. A flow run of ours that sends no heartbeat for twice the heartbeat interval (its worker died or
   hangs) and did not end is marked Crashed; GPU workers send one every OURVIDZ_FLOW_HEARTBEAT_SECONDS,
   and `ourvidz.flow-run.finished` when a run ended (a final state alone would not do: see the trigger).
2. A crashed or cancelled generation run starts the `recover-jobs` flow at once, which re-queues the
   job of a crashed run (capped by the job's `max_attempts`, then failed) and cancels the job of a run
   an operator cancelled in Prefect, instead of waiting for its next schedule.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from ourvidz.orchestration.events import RUN_FINISHED
from ourvidz.orchestration.names import GENERATION_TAG, OURVIDZ_TAG

CRASH_SILENT_RUNS = "ourvidz: crash flow runs without heartbeats"
RECOVER_CRASHED_JOBS = "ourvidz: recover jobs of crashed or cancelled generation runs"
RETIRED = ("ourvidz: recover jobs of crashed generation runs",)  # earlier names, removed by bootstrap
FINAL_EVENTS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}


def _tagged(tag: str) -> dict[str, Any]:
    return {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{tag}"}


def automations(heartbeat_seconds: int, recover_deployment_id: uuid.UUID) -> list[AutomationCore]:
    silent = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        # a final state alone is not enough: the server stamps it, and a run's last heartbeat (stamped by
        # the worker) may come after it; the worker's own RUN_FINISHED always comes after that beat
        expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS, RUN_FINISHED},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=_tagged(OURVIDZ_TAG),  # type: ignore[arg-type]
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=2 * heartbeat_seconds),
    )
    crashed = EventTrigger(
        expect={"prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related=_tagged(GENERATION_TAG),  # type: ignore[arg-type]
        posture=Posture.Reactive,
        threshold=1,
    )
    return [
        AutomationCore(
            name=CRASH_SILENT_RUNS,
            description="A flow run whose heartbeats stopped (its worker died) becomes Crashed.",
            trigger=silent,
            actions=[ChangeFlowRunState(state=StateType.CRASHED, message="No heartbeat: its worker is gone")],
        ),
        AutomationCore(
            name=RECOVER_CRASHED_JOBS,
            description="Settle the job of a crashed (re-queued, up to its max attempts) or cancelled "
            "generation run now.",
            trigger=crashed,
            actions=[RunDeployment(source="selected", deployment_id=recover_deployment_id, parameters={})],
        ),
    ]


async def ensure_automation(client: PrefectClient, desired: AutomationCore) -> str:
    """Create the automation, or update the one of the same name when its trigger or actions differ."""
    existing = await client.read_automations_by_name(desired.name)
    if not existing:
        await client.create_automation(desired)
        return "created"
    # python mode keeps the trigger's sets as sets: their JSON order depends on the hash seed
    current = existing[0].model_dump()
    wanted = desired.model_dump()
    differs = [key for key in ("description", "enabled", "trigger", "actions") if current[key] != wanted[key]]
    if len(existing) == 1 and not differs:
        return "unchanged"
    for duplicate in existing[1:]:  # one automation per name
        await client.delete_automation(duplicate.id)
    await client.update_automation(existing[0].id, desired)
    return f"updated ({', '.join(differs) or 'duplicates removed'})"


async def remove_retired(client: PrefectClient) -> dict[str, str]:
    """Delete automations of ours that an earlier release made under another name."""
    removed = {}
    for name in RETIRED:
        for automation in await client.read_automations_by_name(name):
            await client.delete_automation(automation.id)
            removed[name] = "deleted"
    return removed
