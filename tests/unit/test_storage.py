"""Storage: objects round-trip on fsspec filesystems, and hostile keys never reach the filesystem."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from ourvidz.generation.outputs import store_outputs
from ourvidz.generation.request import request_for_job
from ourvidz.jobs.errors import Failure, StorageFailed
from ourvidz.storage import InvalidStorageKey, Storage, asset_key, validate_bucket, validate_key

HOSTILE_KEYS = [
    "", "..", ".", "../x", "a/../../etc/passwd", "a/..", "/etc/passwd", "//server/share", "a//b", "a/",
    "a\\..\\b", "..\\x", "a\x00b", "a/b\x00.png", "C:/windows", "c:\\x", "~/x", ".hidden", "a/.hidden",
    "a b", "a\nb", "a\tb", "%2e%2e/x", "a/%00", "é/x", "a" * 600, "a/" * 300 + "x",
]  # fmt: skip
HOSTILE_BUCKETS = ["", "..", "A", "a/b", "a\\b", "../x", "-x", "_x", "a\x00", "x" * 64, "a.b"]


@pytest.fixture(params=["file", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return Storage(f"file://{tmp_path / 'root'}")
    return Storage(f"memory://ourvidz-test-{uuid.uuid4().hex}")


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_rejected(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        validate_key(key)
    for call in (storage.get, storage.exists, storage.delete):
        with pytest.raises(InvalidStorageKey):
            call("images", key)
    with pytest.raises(InvalidStorageKey):
        storage.put("images", key, b"data")


@pytest.mark.parametrize("bucket", HOSTILE_BUCKETS)
def test_hostile_buckets_are_rejected(storage: Storage, bucket: str) -> None:
    with pytest.raises(InvalidStorageKey):
        validate_bucket(bucket)
    with pytest.raises(InvalidStorageKey):
        storage.put(bucket, "a.png", b"data")


def test_nothing_was_written_outside_the_root(tmp_path: Path) -> None:
    store = Storage(f"file://{tmp_path / 'root'}")
    for key in HOSTILE_KEYS:
        with pytest.raises(InvalidStorageKey):
            store.put("images", key, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_round_trip(storage: Storage, tmp_path: Path) -> None:
    user_id, job_id = uuid.uuid4(), uuid.uuid4()
    key = asset_key(user_id, job_id, 2, "png")
    assert key == f"{user_id}/{job_id}/2.png"
    assert not storage.exists("sdxl_image_fast", key)
    assert storage.put("sdxl_image_fast", key, b"\x89PNG data") == 9
    assert storage.exists("sdxl_image_fast", key)
    assert storage.get("sdxl_image_fast", key) == b"\x89PNG data"
    assert storage.size("sdxl_image_fast", key) == 9
    local = tmp_path / "clip.mp4"
    local.write_bytes(b"\x00" * 1000)
    video_key = asset_key(user_id, job_id, 0, "mp4")
    assert storage.put_file("video_fast", video_key, local) == 1000
    assert storage.get("video_fast", video_key) == local.read_bytes()
    storage.delete("sdxl_image_fast", key)
    assert not storage.exists("sdxl_image_fast", key)


def test_local_layout_is_bucket_then_key(tmp_path: Path) -> None:
    store = Storage(f"file://{tmp_path}/root/")
    user_id, job_id = uuid.uuid4(), uuid.uuid4()
    store.put("image_fast", asset_key(user_id, job_id, 0, "png"), b"x")
    assert (tmp_path / "root" / "image_fast" / str(user_id) / str(job_id) / "0.png").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("user_id", "job_id", "index", "ext"),
    [("../x", uuid.uuid4(), 0, "png"), (uuid.uuid4(), uuid.uuid4(), -1, "png"),
     (uuid.uuid4(), uuid.uuid4(), 0, "p/ng"), (uuid.uuid4(), uuid.uuid4(), 0, "")],
)  # fmt: skip
def test_asset_key_rejects_bad_parts(user_id: object, job_id: object, index: int, ext: str) -> None:
    with pytest.raises((InvalidStorageKey, ValueError)):
        asset_key(user_id, job_id, index, ext)  # type: ignore[arg-type]


def test_files_storage_refuses_fail_as_storage_failed_with_the_cause_for_operators(tmp_path: Path) -> None:
    """What the job records is STORAGE_FAILED and a public message; the path stays in the chained cause."""
    (tmp_path / "root").write_text("a file where the storage folder must go")
    request = request_for_job("sdxl_image_fast", "a pier", width=64, height=64, steps=2)
    pixels = np.zeros((1, 1, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(StorageFailed) as refused:
        store_outputs(Storage(f"file://{tmp_path / 'root'}"), request, pixels, bucket="sdxl_image_fast",
                      user_id=uuid.uuid4(), job_id=uuid.uuid4())  # fmt: skip
    failure = Failure.of(refused.value)
    assert failure.code == "STORAGE_FAILED" and str(tmp_path) not in failure.message
    assert failure.internal is not None and str(tmp_path) in failure.internal
