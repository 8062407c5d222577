"""Generated files, addressed by bucket and key, on any fsspec filesystem (a local folder by default).

Keys look like `{user_id}/{job_id}/{index}.{ext}` inside a bucket. Every bucket and key is checked
against a strict whitelist before it reaches the filesystem, so no key can leave its bucket.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SEGMENT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
EXTENSION_PATTERN = re.compile(r"[a-z0-9]{1,8}")
MAX_KEY_LENGTH = 512


class InvalidStorageKey(ValueError):
    """A bucket or key that could escape its bucket or is otherwise not a plain relative path."""


def validate_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or not BUCKET_PATTERN.fullmatch(bucket):
        raise InvalidStorageKey(
            f"invalid bucket name {bucket!r}: lowercase letters, digits, '_' and '-' only"
        )
    return bucket


def validate_key(key: str) -> str:
    """Accept only `segment/segment/...` where each segment is a plain name (no `..`, `/`, `\\`, NUL)."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidStorageKey(f"invalid storage key {key!r}: empty or longer than {MAX_KEY_LENGTH}")
    for segment in key.split("/"):
        if not SEGMENT_PATTERN.fullmatch(segment):
            raise InvalidStorageKey(
                f"invalid storage key {key!r}: segment {segment!r} is not a plain file or folder name"
            )
    return key


def asset_key(user_id: uuid.UUID, job_id: uuid.UUID, index: int, ext: str) -> str:
    """The key of output number `index` of a job: `{user_id}/{job_id}/{index}.{ext}`."""
    if not isinstance(index, int) or index < 0:
        raise InvalidStorageKey(f"invalid asset index {index!r}")
    if not EXTENSION_PATTERN.fullmatch(ext):
        raise InvalidStorageKey(f"invalid file extension {ext!r}")
    return validate_key(f"{uuid.UUID(str(user_id))}/{uuid.UUID(str(job_id))}/{index}.{ext}")


class Storage:
    """Buckets under one fsspec URL: `file:///srv/ourvidz`, `s3://my-bucket/prefix`, `memory://x`."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")

    def path(self, bucket: str, key: str) -> str:
        """The filesystem path of an object, after validation."""
        return f"{self.root}/{validate_bucket(bucket)}/{validate_key(key)}"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def signed_url(self, bucket: str, key: str, expires_seconds: int = 3600) -> str | None:
        """A time-limited URL for the object where the filesystem can sign (S3, GCS...), else None."""
        try:
            return self.fs.sign(self.path(bucket, key), expiration=expires_seconds)
        except NotImplementedError:
            return None

    def location(self, bucket: str, key: str) -> str:
        """The object's full URL (`file:///...`, `s3://...`), for people and logs."""
        return self.fs.unstrip_protocol(self.path(bucket, key))

    def put(self, bucket: str, key: str, data: bytes) -> int:
        """Store `data` and return its size in bytes."""
        path = self.path(bucket, key)
        self._ensure_parent(path)
        self.fs.pipe_file(path, data)
        return len(data)

    def put_file(self, bucket: str, key: str, local_path: str | Path) -> int:
        """Upload a local file (e.g. an encoded mp4) and return its size in bytes."""
        path = self.path(bucket, key)
        self._ensure_parent(path)
        self.fs.put_file(str(local_path), path)
        return Path(local_path).stat().st_size

    def get(self, bucket: str, key: str) -> bytes:
        return self.fs.cat_file(self.path(bucket, key))

    def exists(self, bucket: str, key: str) -> bool:
        return self.fs.exists(self.path(bucket, key))

    def size(self, bucket: str, key: str) -> int:
        return int(self.fs.size(self.path(bucket, key)))

    def delete(self, bucket: str, key: str) -> None:
        self.fs.rm_file(self.path(bucket, key))

    def _ensure_parent(self, path: str) -> None:
        # Object stores have no folders; only a local filesystem needs them created.
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
