"""An agent backed by an OpenAI-compatible chat completions endpoint, streamed.

Any server that speaks the chat completions protocol works: OpenAI itself, vLLM, Ollama, LM Studio,
llama.cpp's server. The reply is requested with `"stream": true` and arrives as server-sent
events, one `data: {json}` line per chunk whose `choices[0].delta.content` is the next piece of
text, ended by `data: [DONE]`. Pieces are yielded as they arrive, so the session starts speaking
the first sentence while the model is still writing the rest.

Wire protocol, as documented by OpenAI:
- chat completions and their streaming chunks:
  https://platform.openai.com/docs/api-reference/chat/create and
  https://platform.openai.com/docs/api-reference/chat/streaming
- authentication (`Authorization: Bearer <key>`) and the error body
  `{"error": {"message", "type", "param", "code"}}`:
  https://platform.openai.com/docs/api-reference/authentication and
  https://platform.openai.com/docs/guides/error-codes
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

from providers.openai_api import DEFAULT_BASE_URL, OpenAIHTTP, clip_message
from session.errors import ErrorCode, ProviderError
from session.interfaces import AgentContext, ChatMessage

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SYSTEM_PROMPT",
    "OpenAIChatAgent",
]

PROVIDER: Final = "openai"
DEFAULT_MODEL: Final = "gpt-4o-mini"
DEFAULT_SYSTEM_PROMPT: Final = (
    "You are a helpful assistant answering a phone call. Everything you write is read aloud "
    "by a speech synthesiser, so reply in one to three short, plain spoken sentences. Never use "
    "markdown, lists, headings, emoji or URLs; say numbers, dates and symbols the way a person "
    "would say them. If you did not understand the caller, ask them to repeat."
)

# How the session writes a keypad turn into the history (see VoiceSession._commit_turn).
_KEYPAD_PREFIX: Final = "[keypad] "


class OpenAIChatAgent:
    """Answers each turn with a streamed chat completion.

    `api_key` may be empty for local servers that take none. `timeout` bounds each wait on the
    server (connecting, and each gap between streamed chunks), not the whole reply.
    """

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float = 30.0,
        greeting: str | None = None,
    ) -> None:
        if not model:
            raise ValueError("model must be named")
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise ValueError(f"temperature must be 0..2, got {temperature}")
        if max_tokens is not None and max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.model = model
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.greeting = greeting  # the gateway says this when the call starts, if set
        self._http = OpenAIHTTP(PROVIDER, api_key, base_url, timeout)

    def __repr__(self) -> str:
        return f"OpenAIChatAgent(model={self.model!r}, base_url={self._http.base_url!r})"

    async def respond(self, ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(ctx, transcript),
            "stream": True,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        finished = False
        # Leaving early (the caller barged in, the generator is closed) exits this block,
        # which closes the response: the server sees the disconnect and stops generating.
        async with self._http.stream(
            "/chat/completions", json=body, headers={"Accept": "text/event-stream"}
        ) as response:
            async for line in response.aiter_lines():
                data = _sse_data(line)
                if data is None:
                    continue
                if data == "[DONE]":
                    return
                piece, done = self._read_chunk(data)
                finished = finished or done
                if piece:
                    yield piece
        if not finished:
            # A clean close without [DONE] or a finish_reason: something cut the reply short.
            raise ProviderError(
                ErrorCode.NETWORK_ERROR, PROVIDER, "the reply stream ended before [DONE]"
            )

    def messages(self, ctx: AgentContext, transcript: str) -> list[dict[str, str]]:
        """The conversation as chat messages: system prompt, history, the new user turn.

        Consecutive messages from the same side are merged (a reply the caller cut off before
        hearing a word leaves two user turns in a row), since some chat templates served by
        vLLM or Ollama refuse roles that do not alternate.
        """
        turns = [(m.role, _history_text(m)) for m in ctx.history]
        turns.append(("user", _user_text(ctx, transcript)))
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for role, text in turns:
            if not text:
                continue
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += "\n" + text
            else:
                messages.append({"role": role, "content": text})
        return messages

    def _read_chunk(self, data: str) -> tuple[str, bool]:
        """One `chat.completion.chunk`: (its text, whether it finished the reply)."""
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR,
                PROVIDER,
                "unreadable event in the reply stream",
                cause=exc,
            ) from exc
        if not isinstance(chunk, dict):
            return "", False
        error = chunk.get("error")
        if error:
            # The stream had started (HTTP 200) when the server failed, so the error comes
            # as an event rather than a status.
            raise _stream_error(error, self._http)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            # `reasoning_content` (thinking models on vLLM and others) is not for the caller.
            return (content if isinstance(content, str) else ""), bool(choice.get("finish_reason"))
        return "", False  # a usage-only chunk, or another choice

    async def aclose(self) -> None:
        await self._http.aclose()


def _sse_data(line: str) -> str | None:
    """The payload of a `data:` line; None for comments, other fields and blank lines.

    OpenAI and the compatible servers put each chunk's JSON on one data line, so a line is
    handled as soon as it arrives instead of waiting for the blank line that ends the event.
    """
    if not line.startswith("data:"):
        return None
    value = line[5:]
    return value[1:] if value.startswith(" ") else value


def _stream_error(error: object, http: OpenAIHTTP) -> ProviderError:
    if isinstance(error, dict):
        message = error.get("message") or json.dumps(error)
        kind = error.get("type")
    else:
        message, kind = str(error), None
    # A malformed request stays malformed; anything else (server_error, overload) may pass.
    retryable = kind != "invalid_request_error"
    return ProviderError(
        ErrorCode.PROVIDER_ERROR,
        PROVIDER,
        f"error in the reply stream: {http.redact(clip_message(str(message)))}",
        retryable=retryable,
    )


def _history_text(message: ChatMessage) -> str:
    if message.role == "user" and message.text.startswith(_KEYPAD_PREFIX):
        return _keypad_text(message.text.removeprefix(_KEYPAD_PREFIX))
    return message.text.strip()


def _user_text(ctx: AgentContext, transcript: str) -> str:
    if transcript.strip():
        return transcript.strip()
    if ctx.dtmf:
        return _keypad_text(ctx.dtmf)
    return "(silence)"


def _keypad_text(digits: str) -> str:
    return f"The caller pressed: {' '.join(digits)}"
