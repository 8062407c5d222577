"""What every request body shares: both spellings of a field, tolerance of fields we do not read, text only.

The seed system's clients send fields this gateway does not read (and new ones appear with each
frontend release): a request never fails for an extra field. Models that keep what they do not read
(the job's metadata) say so; the others ignore it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator


def either(*names: str, default: Any = None, **constraints: Any) -> Any:
    """A field that accepts any of `names` (camelCase and snake_case spellings of both eras)."""
    return Field(default=default, validation_alias=AliasChoices(*names), **constraints)


class InvalidText(Exception):
    """A request whose text cannot be stored or sent back (the gateway's 400 INVALID_PARAMETERS, naming
    the field). Not a ValueError on purpose: pydantic passes it through unwrapped, so the answer can
    name the field inside the body, where a model validator's own error could only say `body`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        """Every string of the body, keys included, must be text that can be stored and sent back:
        no NUL (PostgreSQL keeps none in text or JSON) and no lone surrogate (`"\\ud800"` parses as JSON
        but is no UTF-8: it would fail later, as a database or serialisation error after the request
        was accepted); and no deeper nesting than MAX_DEPTH. Refused here, before anything is written."""
        check_text(data)
        return data


MAX_DEPTH = 16  # levels of nesting in a body; the seed's deepest (a callback asset's metadata) is 4
MAX_ITEMS = 256  # keys of a metadata object, items of a free-form list
_MAX_KEY_IN_PATH = 64

Metadata = Annotated[
    dict[str, Any],
    Field(
        max_length=MAX_ITEMS,
        description=f"Free-form object: at most {MAX_ITEMS} keys, {MAX_DEPTH} levels of nesting in the "
        "whole body, text without NUL or lone surrogates (a job's metadata also at most "
        "OURVIDZ_MAX_METADATA_BYTES as JSON).",
    ),
]
FreeList = Annotated[list[Any], Field(max_length=MAX_ITEMS)]


def check_text(data: Any) -> None:
    """Raise InvalidText for the first string (or key) that is not storable text, or for nesting
    deeper than MAX_DEPTH; the field is named, the offending text never repeated."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value, path or "body")
        elif isinstance(value, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise InvalidText(path or "body", f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                name = str(key)
                if isinstance(key, str):
                    _check_string(key, f"{path}.<key>" if path else "<key>")
                    name = key[:_MAX_KEY_IN_PATH]
                stack.append((item, f"{path}.{name}" if path else name, depth + 1))


def _check_string(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidText(field, "text must not contain NUL (\\u0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidText(
            field, "text must be valid Unicode (a lone surrogate such as \\ud800 is not)"
        ) from None


class SimpleResponse(BaseModel):
    success: bool = True
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
