"""The seed system's real wire (`shared/seed/CONTRACTS.md`), both eras, through the gateway over HTTP:
every body its frontend and workers send is accepted with the documented status and answer fields,
and the job-callback fuzz cases are 4xx with the error body, never a 500 or a hang.

Bodies are copied from the contracts with neutral placeholder prompts; ids are made here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ourvidz.db.models import Image, Job, Project, Video
from ourvidz.job_status import JobStatus
from ourvidz.registry.workers import forget
from tests.gateway.conftest import Gateway
from tests.peers import FakeChatWorker

ERROR_FIELDS = {"error", "code", "details", "timestamp"}
QUEUED_FIELDS = {
    "success",
    "job",
    "message",
    "queueLength",
    "modelVariant",
    "debug",
    "jobId",
    "status",
    "queueName",
}


def _queue(gateway: Gateway, user: uuid.UUID, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.url}/queue-job", json=body, headers=gateway.headers(user), timeout=30)


def _queued(gateway: Gateway, user: uuid.UUID, body: dict[str, Any]) -> dict[str, Any]:
    answer = _queue(gateway, user, body)
    assert answer.status_code == 201, answer.text
    queued = answer.json()
    assert set(queued) >= QUEUED_FIELDS and queued["success"] is True
    assert queued["jobId"] == queued["job"]["id"] and queued["status"] == "queued"
    return queued


def _row(gateway: Gateway, kind: type[Project] | type[Video] | type[Image], user: uuid.UUID) -> str:
    with gateway.sessions.begin() as session:
        row = kind(user_id=user, **({"title": "placeholder"} if kind is Project else {}))
        session.add(row)
        session.flush()
        return str(row.id)


def test_era_a_image_body(gateway: Gateway) -> None:
    user = gateway.user()
    body = {
        "jobType": "sdxl_image_fast",
        "metadata": {
            "reference_image": False,
            "model_variant": "lustify_sdxl",
            "credits": 1,
            "model_type": "sdxl",
            "is_sdxl": True,
            "prompt": "a red car on a coastal road",
            "queue": "sdxl_queue",
            "bucket": "sdxl_image_fast",
            "enhanced_tracking": True,
            "generation_format": "sdxl_image_fast",
            "client_timestamp": "2025-07-03T18:00:00.000Z",
        },
        "imageId": _row(gateway, Image, user),
    }
    queued = _queued(gateway, user, body)
    job = queued["job"]
    assert (job["job_type"], job["original_prompt"], job["image_id"]) == (
        "sdxl_image_fast",
        "a red car on a coastal road",
        body["imageId"],
    )
    assert queued["queueName"] == "sdxl_queue" and job["metadata"]["generation_format"] == "sdxl_image_fast"


def test_era_a_video_body_with_a_project_and_its_prompt(gateway: Gateway) -> None:
    user = gateway.user()
    body = {
        "jobType": "video_fast",
        "metadata": {
            "source": "fast_video_generator",
            "credits": 3,
            "model_variant": "wan_2_1_1_3b",
            "model_type": "wan",
            "is_sdxl": False,
            "prompt": "a lighthouse at dusk",
            "queue": "wan_queue",
            "bucket": "video_fast",
            "enhanced_tracking": True,
            "generation_format": "video_fast",
            "client_timestamp": "2025-07-03T18:00:00Z",
        },
        "projectId": _row(gateway, Project, user),
        "videoId": _row(gateway, Video, user),
    }
    queued = _queued(gateway, user, body)
    assert (queued["job"]["video_id"], queued["job"]["project_id"]) == (body["videoId"], body["projectId"])
    assert queued["queueName"] == "wan_queue" and queued["job"]["original_prompt"] == "a lighthouse at dusk"
    with gateway.sessions.begin() as session:
        session.get_one(Project, uuid.UUID(body["projectId"])).original_prompt = "a quiet harbour"
    promptless = {"jobType": "video_fast", "projectId": body["projectId"]}
    assert _queued(gateway, user, promptless)["job"]["original_prompt"] == "a quiet harbour"


def test_era_b_workspace_body_keeps_every_option(gateway: Gateway) -> None:
    body = {
        "job_type": "sdxl_image_high",
        "prompt": "a red car on a coastal road",
        "quality": "high",
        "model_type": "sdxl",
        "model_key": "placeholder-key",
        "model_id": str(uuid.uuid4()),
        "reference_strength": 0.5,
        "seed": None,
        "num_images": 3,
        "steps": 25,
        "guidance_scale": 7.5,
        "negative_prompt": "",
        "denoise_strength": 0.5,
        "seed_locked": False,
        "compel_enabled": False,
        "compel_weights": "",
        "metadata": {
            "model_provider": "local",
            "aspect_ratio": "16:9",
            "shot_type": "wide",
            "camera_angle": "eye_level",
            "style": "",
            "enhancement_model": "qwen_instruct",
            "contentType": "sfw",
            "user_requested_enhancement": True,
            "skip_enhancement": False,
            "exact_copy_mode": False,
            "lock_hair": False,
            "num_inference_steps": 25,
            "guidance_scale": 7.5,
        },
    }
    queued = _queued(gateway, gateway.user(), body)
    metadata = queued["job"]["metadata"]
    assert {
        key: metadata[key] for key in ("num_images", "steps", "guidance", "width", "height", "enhance")
    } == {
        "num_images": 3,
        "steps": 25,
        "guidance": 7.5,
        "width": 1024,
        "height": 576,
        "enhance": True,
    }
    assert (metadata["model_key"], metadata["seed_locked"], metadata["shot_type"]) == (
        "placeholder-key",
        False,
        "wide",
    )
    assert (metadata["quality"], metadata["compel_enabled"], queued["job"]["job_type"]) == (
        "high",
        False,
        "sdxl_image_high",
    )


def test_era_b_generation_service_and_video_bodies(gateway: Gateway) -> None:
    user = gateway.user()
    service = {
        "prompt": "a lighthouse at dusk",
        "original_prompt": "a lighthouse at dusk",
        "job_type": "sdxl_image_fast",
        "quality": "fast",
        "format": "png",
        "model_type": "sdxl",
        "enhanced_prompt": "a lighthouse at dusk, soft light",
        "num_images": 5,
        "reference_strength": 0.5,
        "negative_prompt": "blurry",
        "steps": 12,
        "guidance_scale": 5.5,
        "denoise_strength": 0.5,
        "seed": 1757100000,
        "metadata": {
            "user_requested_enhancement": True,
            "enhancement_model": "qwen_instruct",
            "skip_enhancement": False,
        },
    }
    metadata = _queued(gateway, user, service)["job"]["metadata"]
    assert (metadata["num_images"], metadata["seed"], metadata["negative_prompt"], metadata["format"]) == (
        6,
        1757100000,
        "blurry",
        "png",
    )
    assert (metadata["enhanced_prompt"], metadata["enhance"]) == ("a lighthouse at dusk, soft light", False)
    video = {
        "job_type": "wan_video_fast",
        "prompt": "a boat at dawn",
        "quality": "fast",
        "num_images": 3,
        "metadata": {"duration": 5, "motion_intensity": 0.5, "aspect_ratio": "16:9", "contentType": "sfw"},
    }
    queued = _queued(gateway, user, video)
    assert (queued["job"]["job_type"], queued["queueName"]) == ("video_fast", "wan_queue")
    assert (queued["job"]["metadata"]["num_images"], queued["job"]["metadata"]["width"]) == (1, 832)


def test_reference_images_own_remote_and_of_others(gateway: Gateway) -> None:
    user, other = gateway.user(), gateway.user()
    own = f"user-library/{user}/ref.png"
    body = {
        "job_type": "sdxl_image_high", "prompt": "a red car on a coastal road", "reference_image_url": own,
        "reference_strength": 0.5, "denoise_strength": 0.35, "guidance_scale": 7.5, "steps": 25,
        "metadata": {"reference_image_url": own, "reference_mode": "modify", "reference_type": "style",
                     "denoise_strength": 0.35, "reference_profile": {"placeholder": True}},
    }  # fmt: skip
    metadata = _queued(gateway, user, body)["job"]["metadata"]
    assert (metadata["reference_mode"], metadata["reference_image_url"]) == ("modify", own)
    copy = {"job_type": "sdxl_image_fast", "prompt": "", "metadata": {"exact_copy_mode": True,
            "reference_image_url": f"workspace-temp/{user}/ref.png"}}  # fmt: skip
    assert _queued(gateway, user, copy)["job"]["metadata"]["reference_mode"] == "copy"
    theirs = f"user-library/{user}/ref.png"  # sent by `other` below
    refused = {
        "another user's file": ({"job_type": "sdxl_image_fast", "prompt": "x", "reference_image_url": theirs},
                                403, "CROSS_USER_REFERENCE"),
        "a loopback URL": ({"job_type": "sdxl_image_fast", "prompt": "x",
                            "reference_image_url": "https://127.0.0.1:4200/api/flow_runs"}, 400,
                           "REFERENCE_URL_NOT_ALLOWED"),
        "a link-local URL": ({"job_type": "sdxl_image_fast", "prompt": "x",
                              "metadata": {"reference_image_url": "https://169.254.169.254/latest"}}, 400,
                             "REFERENCE_URL_NOT_ALLOWED"),
        "a video's start frame": ({"job_type": "wan_video_fast", "prompt": "x",
                                   "metadata": {"start_reference_url": "https://example.com/a.png"}}, 400,
                                  "REFERENCE_NOT_SUPPORTED"),
    }  # fmt: skip
    for case, (refused_body, status, code) in refused.items():
        answer = _queue(gateway, other, refused_body)
        assert (answer.status_code, answer.json()["code"]) == (status, code), (case, answer.text)
    with gateway.sessions() as session:
        assert session.scalars(select(Job).where(Job.user_id == other)).all() == []


ENHANCE_BODIES = {
    "era A modal": {
        "prompt": "a lighthouse at dusk",
        "jobType": "sdxl_image_fast",
        "format": "image",
        "quality": "fast",
        "selectedModel": "qwen_instruct",
        "selectedPresets": ["cinematic"],
    },
    "era B modal": {
        "original_prompt": "a lighthouse at dusk",
        "job_type": "sdxl_image_high",
        "format": "image",
        "quality": "high",
        "enhancement_model": "qwen_base",
        "contentType": "sfw",
        "selectedPresets": [],
    },
    "era B mobile": {
        "prompt": "a lighthouse at dusk",
        "model_id": str(uuid.uuid4()),
        "job_type": "video",
        "contentType": "sfw",
        "enhancement_model": "qwen_instruct",
    },
}


@pytest.mark.parametrize("case", sorted(ENHANCE_BODIES))
def test_enhance_prompt_bodies(gateway: Gateway, case: str) -> None:
    answer = httpx.post(f"{gateway.url}/enhance-prompt", json=ENHANCE_BODIES[case], headers=gateway.headers())
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["success"] is True and result["original_prompt"] == "a lighthouse at dusk"
    assert result["enhanced_prompt"] and result["enhancement_strategy"]
    metadata = result["enhancement_metadata"]
    assert {
        "token_optimization",
        "original_length",
        "enhanced_length",
        "expansion_percentage",
        "job_type",
        "template_name",
        "token_count",
        "compression_applied",
        "execution_time_ms",
    } <= set(metadata)
    assert result["optimization"] == metadata["token_optimization"]
    assert (
        metadata["job_type"]
        == {"era A modal": "sdxl_image_fast", "era B modal": "sdxl_image_high", "era B mobile": "video_fast"}[
            case
        ]
    )


def test_enhance_prompt_special_cases(gateway: Gateway) -> None:
    url, headers = f"{gateway.url}/enhance-prompt", gateway.headers()
    copy = {"prompt": "", "job_type": "sdxl_image_fast", "metadata": {"exact_copy_mode": True}}
    copied = httpx.post(url, json=copy, headers=headers).json()
    assert (copied["enhancement_strategy"], copied["enhanced_prompt"]) == ("skip_for_exact_copy", "")
    none = httpx.post(
        url, json={"prompt": "a lighthouse", "enhancement_model": "none"}, headers=headers
    ).json()
    assert (none["enhancement_strategy"], none["enhanced_prompt"]) == ("none", "a lighthouse")
    missing = httpx.post(url, json={"job_type": "sdxl_image_fast"}, headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (400, "MISSING_PROMPT")
    assert missing.json()["error"] == "Prompt is required and must be a string"
    wrong = httpx.post(url, json={"prompt": ["a", "list"], "job_type": "image"}, headers=headers)
    assert (wrong.status_code, wrong.json()["details"][0]["field"]) == (400, "prompt")


@pytest.fixture
def worker(gateway: Gateway) -> Iterator[FakeChatWorker]:
    worker = FakeChatWorker()
    yield worker
    worker.stop()
    gateway.forget_chat_worker()
    forget(gateway.sessions, "wan")


def test_the_seed_workers_register_with_their_own_bodies(gateway: Gateway, worker: FakeChatWorker) -> None:
    chat = {
        "worker_url": worker.url,
        "auto_registered": True,
        "registration_method": "pure_inference_chat_worker",
        "worker_type": "pure_inference_engine",
        "timestamp": "2025-09-06T12:00:00Z",
        "capabilities": {"hardcoded_prompts": False, "prompt_modification": False, "pure_inference": True},
    }
    registered = httpx.post(f"{gateway.url}/register-chat-worker", json=chat, headers=gateway.service())
    assert registered.status_code == 200, registered.text
    answer = registered.json()
    assert (answer["success"], answer["workerUrl"], answer["healthStatus"]) == (True, worker.url, "healthy")
    assert answer["auto_registered"] is True and {"responseTimeMs", "registrationInfo"} <= set(answer)
    assert (answer["details"]["protocol"], answer["details"]["capabilities"]) == (
        "ourvidz",
        ["pure_inference"],
    )
    wan = {
        "worker_url": worker.url,
        "auto_registered": True,
        "registration_method": "wan_worker_self_registration",
        "detection_method": "RUNPOD_POD_ID",
        "timestamp": "2025-09-06T12:00:00Z",
    }
    updated = httpx.post(f"{gateway.url}/update-worker-url", json=wan, headers=gateway.service())
    assert updated.status_code == 200, updated.text
    assert (updated.json()["worker_url"], updated.json()["details"]["url"]) == (worker.url, worker.url)
    user = gateway.headers()
    asked = httpx.post(
        f"{gateway.url}/get-active-worker-url", json={"worker_type": "wan"}, headers=user
    ).json()
    assert (asked["worker_url"], asked["worker_type"], asked["isHealthy"]) == (worker.url, "wan", True)
    by_query = httpx.get(f"{gateway.url}/get-active-worker-url?worker_type=chat", headers=user).json()
    assert (by_query["workerUrl"], by_query["workerCapabilities"]) == (worker.url, ["pure_inference"])
    default = httpx.post(f"{gateway.url}/get-active-worker-url", headers=user).json()
    assert default["worker_type"] == "chat"
    bad = httpx.post(f"{gateway.url}/get-active-worker-url", json={"worker_type": "gpu"}, headers=user)
    assert (bad.status_code, bad.json()["details"][0]["field"]) == (400, "worker_type")


def _job(gateway: Gateway, job_type: str, **extra: Any) -> tuple[uuid.UUID, dict[str, Any]]:
    user = gateway.user()
    return user, _queued(gateway, user, {"job_type": job_type, "prompt": "a lighthouse at dusk", **extra})[
        "job"
    ]


def test_worker_callbacks_of_every_era(gateway: Gateway) -> None:
    user, job = _job(gateway, "sdxl_image_fast", num_images=3)
    paths = [f"{user}/sdxl_{job['id']}_1757100000_{n}.png" for n in (1, 2)]
    older = gateway.callback(
        {"jobId": job["id"], "status": "completed", "imageUrls": paths, "errorMessage": None}
    )
    assert older.status_code == 200, older.text
    assert (older.json()["jobId"], older.json()["status"]) == (job["id"], "completed")

    user, job = _job(gateway, "video_fast")
    wan = {
        "jobId": job["id"],
        "status": "completed",
        "errorMessage": None,
        "filePath": f"{user}/wan_{job['id']}.mp4",
    }
    assert gateway.callback(wan).status_code == 200
    with gateway.sessions() as session:
        video = session.scalar(select(Video).where(Video.job_id == uuid.UUID(job["id"])))
    assert video is not None and video.storage_key == wan["filePath"]

    user, job = _job(gateway, "video_fast")
    era_a2 = {
        "job_id": job["id"],
        "status": "completed",
        "assets": [f"{user}/{job['id']}.mp4"],
        "error_message": None,
        "metadata": {"frame_num": 83},
    }
    assert gateway.callback(era_a2).status_code == 200

    user, job = _job(gateway, "sdxl_image_high", num_images=3)
    era_b = {
        "job_id": job["id"],
        "status": "completed",
        "error_message": None,
        "assets": [
            {
                "type": "image",
                "url": f"{user}/{job['id']}/{n}.png",
                "thumbnail_url": f"{user}/{job['id']}/{n}.thumb.webp",
                "metadata": {
                    "width": 1024,
                    "height": 1024,
                    "format": "png",
                    "batch_size": 3,
                    "steps": 25,
                    "guidance_scale": 7.5,
                    "seed": 1757100000 + n,
                    "file_size_bytes": 1630211,
                    "asset_index": n,
                    "negative_prompt_used": True,
                },
            }
            for n in range(3)
        ],
        "metadata": {
            "seed": 1757100000,
            "generation_time": 21.7,
            "num_images": 3,
            "job_type": "sdxl_image_high",
            "compel_enabled": False,
            "compel_weights": None,
            "enhancement_strategy": "none",
        },
    }
    assert gateway.callback(era_b).status_code == 200
    with gateway.sessions() as session:
        images = session.scalars(select(Image).where(Image.job_id == uuid.UUID(job["id"]))).all()
    assert sorted((i.seed, i.width) for i in images) == [(1757100000 + n, 1024) for n in range(3)]

    user, job = _job(gateway, "video_fast")
    failure = {
        "job_id": job["id"],
        "status": "failed",
        "assets": [],
        "error_message": "RuntimeError: placeholder",
        "metadata": {"error_type": "RuntimeError", "job_type": "video_fast", "timestamp": 1757100000.5},
    }
    assert gateway.callback(failure).json()["status"] == "failed"


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


CALLBACK_FUZZ = {
    "invalid JSON": b"{not json",
    "empty body": b"",
    "unknown status": b'{"jobId": "%s", "status": "done"}',
    "long error": json.dumps({"jobId": "%s", "status": "failed", "errorMessage": "e" * 10_001}).encode(),
    "NUL in the error": json.dumps({"jobId": "%s", "status": "failed", "errorMessage": "a\x00b"}).encode(),
    "job id not a uuid": b'{"jobId": "12", "status": "completed"}',
    "assets of numbers": b'{"jobId": "%s", "status": "completed", "assets": [1, 2]}',
    "deep metadata": b'{"jobId": "%s", "status": "completed", "metadata": ' + _nested(10_000).encode() + b"}",
    "100,000 image URLs": json.dumps(
        {"jobId": "%s", "status": "completed", "imageUrls": ["a"] * 100_000}
    ).encode(),
    "an over-long path": json.dumps({"jobId": "%s", "status": "completed", "filePath": "a/" * 2000}).encode(),
    "a seed out of range": json.dumps(
        {"jobId": "%s", "status": "completed", "assets": [{"url": "u/0.png", "seed": 2**70}]}
    ).encode(),
    "a list for metadata": b'{"jobId": "%s", "status": "completed", "metadata": [1]}',
}


@pytest.mark.parametrize("case", sorted(CALLBACK_FUZZ))
def test_a_malformed_callback_is_a_400_and_changes_nothing(gateway: Gateway, case: str) -> None:
    _user, job = _job(gateway, "video_fast")
    answer = gateway.callback(CALLBACK_FUZZ[case].replace(b"%s", job["id"].encode()))
    assert answer.status_code in (400, 413), answer.text
    assert set(answer.json()) == ERROR_FIELDS
    with gateway.sessions() as session:
        assert session.get_one(Job, uuid.UUID(job["id"])).status is JobStatus.QUEUED
