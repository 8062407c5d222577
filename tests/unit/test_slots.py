"""A GPU worker's per-queue slots, and the pool-wide queue limits bootstrap derives from them."""

from __future__ import annotations

import uuid

from ourvidz.config import Settings
from ourvidz.worker.slots import QueueSlots


def test_a_queue_takes_runs_up_to_its_slots_and_frees_them_one_by_one() -> None:
    slots = QueueSlots({"sdxl": 2, "wan": 1})
    runs = [uuid.uuid4() for _ in range(3)]
    assert [slots.take(run, "sdxl") for run in runs] == [True, True, False]
    assert slots.take(runs[0], "sdxl"), "a run holding a slot keeps it when offered again"
    assert slots.take(uuid.uuid4(), "wan") and not slots.take(uuid.uuid4(), "wan")
    assert slots.held() == {"sdxl": 2, "wan": 1}
    slots.release(runs[1])
    assert slots.take(runs[2], "sdxl") and slots.held()["sdxl"] == 2
    assert not slots.take(uuid.uuid4(), "other"), "a queue this worker does not serve has no slots"
    assert slots.total == 3


def test_the_pool_limit_is_the_sum_of_the_workers_slots_unless_set(tmp_path) -> None:
    default = Settings(data_dir=tmp_path)
    assert (default.queue_limit("sdxl"), default.queue_limit("wan")) == (4, 2)
    fleet = Settings(data_dir=tmp_path, gpu_workers=3, sdxl_slots=2)
    assert (fleet.queue_limit("sdxl"), fleet.queue_limit("wan")) == (6, 6)
    mixed = Settings(data_dir=tmp_path, gpu_workers=3, sdxl_concurrency=5)  # workers of unequal slots
    assert mixed.queue_limit("sdxl") == 5 and mixed.worker_slots("sdxl") == 4
    assert default.worker_slots("default") == 16, "maintenance flows do not queue behind each other"
