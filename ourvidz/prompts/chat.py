"""The chat-worker client: replies and prompt rewrites from a chat worker over HTTP.

Two wire shapes, chosen when the worker registers (`protocol`):
- `openai`: `POST /v1/chat/completions` as served by vLLM, llama.cpp and most inference servers;
- `ourvidz`: the OurVidz chat worker's pure-inference endpoints, `POST /enhance` (answers
  `{"enhanced_prompt": ...}`) and `POST /chat` (answers `{"response": ...}`), both taking `messages`.

Anything but a usable answer (refused connection, timeout, HTTP error, malformed or empty reply)
raises `EnhancerFailed`, so the caller can fall back to the next enhancer and say so.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from httpx_sse import EventSource

from ourvidz.catalog import JobType
from ourvidz.egress import EgressPolicy
from ourvidz.prompts.budget import count_tokens, fit_prompt
from ourvidz.prompts.rules import Enhancement

STRATEGY = "chat_worker"
MAX_REPLY_CHARS = 4000
Protocol = Literal["openai", "ourvidz"]
PROTOCOLS: tuple[Protocol, ...] = ("openai", "ourvidz")


class EnhancerFailed(RuntimeError):
    """The enhancer gave no usable prompt; the reason is safe to log (it never holds the prompt)."""


@functools.cache
def _client(egress: EgressPolicy) -> httpx.Client:
    """One pooled client per process and policy: keep-alive connections to the worker, and no client
    set-up (an SSL context, ~10 ms of CPU) on every request."""
    return egress.client(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))


@dataclass(frozen=True, slots=True)
class ChatWorker:
    """A registered chat worker, called only where `egress` (the worker URL policy) allows."""

    url: str
    protocol: Protocol = "openai"
    egress: EgressPolicy = field(default_factory=EgressPolicy)


def chat_completion(
    worker: ChatWorker,
    messages: list[dict[str, str]],
    timeout: float,
    purpose: Literal["chat", "enhance"] = "chat",
    **options: Any,
) -> str:
    """One reply of the chat worker; raises EnhancerFailed on anything unusable."""
    base = worker.url.rstrip("/")
    if worker.protocol == "openai":
        path, field = "/v1/chat/completions", None
    else:
        path, field = f"/{purpose}", "enhanced_prompt" if purpose == "enhance" else "response"
    try:
        answer = _client(worker.egress).post(
            f"{base}{path}", json={"messages": messages, **options}, timeout=timeout
        )
        answer.raise_for_status()
        body = answer.json()
        content = body["choices"][0]["message"]["content"] if field is None else body[field]
    except httpx.TimeoutException:
        raise EnhancerFailed(f"no answer within {timeout:g} s") from None
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise EnhancerFailed(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(content, str) or not content.strip():
        raise EnhancerFailed("empty or non-text reply")
    return content.strip()


def fitted_enhancement(reply: str, prompt: str, job_type: JobType, strategy: str) -> Enhancement:
    """An LLM's rewrite as an Enhancement within the job type's token budget (EnhancerFailed if unusable)."""
    if len(reply) > MAX_REPLY_CHARS:
        raise EnhancerFailed(f"reply longer than {MAX_REPLY_CHARS} characters")
    fitted = fit_prompt(reply.strip().strip('"').strip(), job_type.family, job_type.token_budget)
    if not fitted.text.strip():
        raise EnhancerFailed("nothing left of the reply after fitting")
    return Enhancement(
        prompt=fitted.text, strategy=strategy, token_count=fitted.token_count, budget=fitted.budget,
        compression_applied=fitted.compression_applied,
        original_token_count=count_tokens(prompt, job_type.family), added=[], dropped=fitted.dropped,
        truncated=fitted.truncated,
    )  # fmt: skip


def chat_enhance(
    worker: ChatWorker, prompt: str, job_type: JobType, system_prompt: str, timeout: float,
    model: str | None = None,
) -> Enhancement:  # fmt: skip
    """The chat worker's rewrite of `prompt`, within the job type's token budget; `model` (the spec's
    `selectedModel`) picks among an OurVidz worker's models."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
    options: dict[str, Any] = {"max_tokens": job_type.token_budget * 2, "temperature": 0.7}
    if model is not None and worker.protocol == "ourvidz":
        options["model"] = model
    reply = chat_completion(worker, messages, timeout, "enhance", **options)
    return fitted_enhancement(reply, prompt, job_type, STRATEGY)


# --- streamed replies (the playground chat) --------------------------------------------------------

MAX_CHAT_REPLY_CHARS = 20_000  # a streamed chat reply longer than this is refused, like MAX_REPLY_CHARS


class ChatStream:
    """A chat worker's reply as it arrives: iterating gives non-empty text chunks, whose concatenation
    is the reply stripped (as `chat_completion` gives it). Anything unusable along the way (a broken
    connection, a timeout, a malformed event, an empty or overlong reply, a stream without its end)
    raises `EnhancerFailed` from the iteration. The connection is closed at the end, on a failure, or
    by `close()`; use it as a context manager to be sure."""

    def __init__(
        self, chunks: Iterator[str], close: Callable[[], None] | None = None, timeout: float = 0.0,
        limit: int = MAX_CHAT_REPLY_CHARS,
    ) -> None:  # fmt: skip
        self._chunks, self._close, self._timeout, self._limit = chunks, close, timeout, limit
        self._pending = ""  # trailing whitespace held back until more text follows it
        self._started = False
        self.length = 0  # characters given so far

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.close()
                if not self._started:
                    raise EnhancerFailed("empty or non-text reply") from None
                raise
            except EnhancerFailed:
                self.close()
                raise
            except httpx.TimeoutException:
                self.close()
                raise EnhancerFailed(f"no more of the reply within {self._timeout:g} s") from None
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                self.close()
                raise EnhancerFailed(f"{type(exc).__name__}: {exc}") from None
            text = self._pending + (chunk if self._started else chunk.lstrip())
            body = text.rstrip()
            self._pending = text[len(body) :]
            if body:
                self._started = True
                self.length += len(body)
                if self.length > self._limit:
                    self.close()
                    raise EnhancerFailed(f"reply longer than {self._limit} characters")
                return body

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def stream_chat_completion(
    worker: ChatWorker, messages: list[dict[str, str]], timeout: float, **options: Any
) -> ChatStream:
    """The chat worker's reply in chunks as it produces them (`timeout` applies to each read).

    Connects, and sees the worker accept the request, before it returns: a worker that cannot answer
    raises EnhancerFailed here, one that breaks off later raises it from the iteration. An `openai`
    worker is asked with `"stream": true` and answers server-sent events (a worker that answers plain
    JSON instead is read as one chunk); an `ourvidz` worker does not stream, so its whole reply is
    fetched here and given as one chunk.
    """
    if worker.protocol != "openai":
        return ChatStream(iter([chat_completion(worker, messages, timeout, "chat", **options)]))
    client = worker.egress.client(timeout=timeout)
    try:
        request = client.build_request(
            "POST", f"{worker.url.rstrip('/')}/v1/chat/completions",
            json={"messages": messages, **options, "stream": True}, headers={"accept": "text/event-stream"},
        )  # fmt: skip
        response = client.send(request, stream=True)
    except httpx.TimeoutException:
        client.close()
        raise EnhancerFailed(f"no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        client.close()
        raise EnhancerFailed(f"{type(exc).__name__}: {exc}") from None

    def close() -> None:
        response.close()
        client.close()

    if not response.is_success:
        close()
        raise EnhancerFailed(f"HTTP {response.status_code}")
    if response.headers.get("content-type", "").startswith("application/json"):
        return ChatStream(_whole_reply(response), close, timeout)
    return ChatStream(_streamed_deltas(response), close, timeout)


def _whole_reply(response: httpx.Response) -> Iterator[str]:
    content = json.loads(response.read())["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise EnhancerFailed("empty or non-text reply")
    yield content


def _streamed_deltas(response: httpx.Response) -> Iterator[str]:
    """The content deltas of an OpenAI chat-completion event stream, up to `data: [DONE]`."""
    finished = False
    for sse in EventSource(response).iter_sse():
        if sse.data.strip() == "[DONE]":
            return
        event = json.loads(sse.data)
        if event.get("error"):
            raise EnhancerFailed("the chat worker reported an error in its stream")
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str) and content:
                yield content
            finished = finished or bool(choice.get("finish_reason"))
    if not finished:  # neither [DONE] nor a finish reason: the worker broke off
        raise EnhancerFailed("the stream ended before the reply was complete")
