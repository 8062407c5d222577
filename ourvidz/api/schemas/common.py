"""What every request body shares: both spellings of a field, tolerance of fields we do not read, no NUL.

The seed system's clients send fields this gateway does not read (and new ones appear with each
frontend release): a request never fails for an extra field. Models that keep what they do not read
(the job's metadata) say so; the others ignore it.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator


def either(*names: str, default: Any = None, **constraints: Any) -> Any:
    """A field that accepts any of `names` (camelCase and snake_case spellings of both eras)."""
    return Field(default=default, validation_alias=AliasChoices(*names), **constraints)


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        """PostgreSQL stores no NUL character in text or JSON: refused here as a client error (400),
        not left to fail as a database error (500) after the request was accepted."""
        if _has_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


class SimpleResponse(BaseModel):
    success: bool = True
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
