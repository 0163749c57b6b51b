"""Provider fallback lists that are themselves providers.

`FallbackTTS`, `FallbackSTT` and `FallbackAgent` satisfy the same protocols as what they wrap,
so the engine treats a list of providers exactly like one. A provider that fails is skipped
for `recovery_interval` seconds, then preferred again: the list's order is the operator's
preference, and a blip should not demote the best provider for the rest of the process.

A provider is only replaced while nothing of its output has been used. Once audio or text has
gone out, its failure propagates: replaying the start of a sentence from another provider
would make the caller hear words twice.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from session.audio import StreamingResampler
from session.chunking import ChunkedSTTStream
from session.errors import ErrorCode, ProviderError, SessionError, classify
from session.interfaces import STT, TTS, Agent, AgentContext, STTStream, TranscriptEvent

log = logging.getLogger(__name__)

T = TypeVar("T", bytes, str)
Clock = Callable[[], float]
DEFAULT_RECOVERY_INTERVAL = 30.0


class _Health:
    """Which providers of one list are cooling down after a failure, and in what order to try.

    Providers in their cooling-down period come last instead of not at all: when every
    provider failed recently, trying them again beats failing the call without a try.
    """

    def __init__(self, kind: str, names: list[str], recovery_interval: float, clock: Clock):
        if recovery_interval < 0:
            raise SessionError(
                ErrorCode.INVALID_CONFIG,
                f"{kind} fallback recovery_interval must be >= 0, got {recovery_interval}",
            )
        self.kind = kind
        self.names = names
        self.failures: dict[str, int] = dict.fromkeys(names, 0)
        self._recovery_interval = recovery_interval
        self._clock = clock
        self._failed_at: dict[int, float] = {}

    def _cooling(self, index: int, now: float) -> bool:
        failed_at = self._failed_at.get(index)
        return failed_at is not None and now - failed_at < self._recovery_interval

    def order(self) -> list[int]:
        now = self._clock()
        indices = range(len(self.names))
        healthy = [i for i in indices if not self._cooling(i, now)]
        return healthy + [i for i in indices if self._cooling(i, now)]

    @property
    def active(self) -> str:
        return self.names[self.order()[0]]

    def failed(self, index: int, exc: BaseException) -> None:
        now = self._clock()
        name = self.names[index]
        self.failures[name] += 1
        # Warn on the switch only; a provider failing again while cooling down changes nothing.
        if not self._cooling(index, now):
            nxt = next((self.names[i] for i in self.order() if i != index), None)
            target = f"switching to {nxt}" if nxt else "no other provider"
            log.warning("%s provider %s failed (%s); %s", self.kind, name, _describe(exc), target)
        self._failed_at[index] = now

    def succeeded(self, index: int) -> None:
        self._failed_at.pop(index, None)

    def all_failed(self, errors: list[tuple[str, Exception]]) -> ProviderError:
        summary = "; ".join(f"{name}: {_describe(exc)}" for name, exc in errors)
        # Worth retrying if any provider might recover; a list of auth failures will not.
        retryable = any(classify(exc, ErrorCode.PROVIDER_ERROR).retryable for _, exc in errors)
        return ProviderError(
            ErrorCode.PROVIDER_ERROR,
            "fallback",
            f"all {len(errors)} {self.kind} providers failed: {summary}",
            retryable=retryable,
            cause=errors[-1][1] if errors else None,
        )


class _FallbackList:
    """What every fallback list shares: unique member names, their health, which is active."""

    def __init__(self, kind: str, names: list[str], recovery_interval: float, clock: Clock) -> None:
        unique = _names(kind, names)
        self.name = f"fallback({','.join(unique)})"
        self._health = _Health(kind, unique, recovery_interval, clock)

    @property
    def active(self) -> str:
        return self._health.active

    @property
    def failures(self) -> dict[str, int]:
        return self._health.failures


class FallbackTTS(_FallbackList):
    """Synthesises with the first healthy TTS; switches only before any audio was yielded."""

    def __init__(
        self,
        providers: Sequence[TTS],
        *,
        recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
        clock: Clock = time.monotonic,
    ) -> None:
        self._providers = list(providers)
        super().__init__("TTS", [p.name for p in self._providers], recovery_interval, clock)
        # The list declares its first member's rate; audio from a member at another rate is
        # resampled to it, so the engine sees one format whichever member speaks.
        self.sample_rate = self._providers[0].sample_rate

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        return _first_healthy(self._health, lambda i: self._member_audio(i, text))

    def _member_audio(self, index: int, text: str) -> AsyncIterator[bytes]:
        provider = self._providers[index]
        audio = provider.synthesize(text)
        if provider.sample_rate == self.sample_rate:
            return audio
        return _resampled(audio, StreamingResampler(provider.sample_rate, self.sample_rate))

    async def keep_alive(self) -> None:
        await _keep_alive_all(self._providers)


class FallbackSTT(_FallbackList):
    """Opens a stream on the first healthy STT; a stream that fails marks its provider failed.

    The failure still reaches the engine, which reconnects by calling `open_stream()` again:
    that call then lands on the next healthy provider.
    """

    def __init__(
        self,
        providers: Sequence[STT],
        *,
        recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
        clock: Clock = time.monotonic,
        max_chunk_seconds: float = 10.0,
    ) -> None:
        self._providers = list(providers)
        super().__init__("STT", [p.name for p in self._providers], recovery_interval, clock)
        # The session sends audio at the first member's rate; a member with another rate gets
        # it through its own streaming resampler, so a fallback costs nothing until it is used.
        self.sample_rate = self._providers[0].sample_rate
        self._max_chunk_seconds = max_chunk_seconds

    async def open_stream(self) -> STTStream:
        errors: list[tuple[str, Exception]] = []
        for index in self._health.order():
            provider = self._providers[index]
            try:
                if getattr(provider, "streaming", True) is False:
                    # A batch recogniser gets the chunking the session would give it alone.
                    inner: STTStream = ChunkedSTTStream(provider, self._max_chunk_seconds)  # type: ignore[arg-type]
                else:
                    inner = await provider.open_stream()
                if provider.sample_rate != self.sample_rate:
                    inner = _ResampledStream(inner, self.sample_rate, provider.sample_rate)
            except Exception as exc:
                self._health.failed(index, exc)
                errors.append((self._health.names[index], exc))
                continue
            self._health.succeeded(index)
            return _FallbackStream(inner, self._health, index)
        raise self._health.all_failed(errors)


async def _resampled(
    audio: AsyncIterator[bytes], resampler: StreamingResampler
) -> AsyncIterator[bytes]:
    async for chunk in audio:
        out = resampler.process(chunk)
        if out:
            yield out


class _ResampledStream:
    """A member stream at another rate than the fallback list declares."""

    def __init__(self, inner: STTStream, src_rate: int, dst_rate: int) -> None:
        self._inner = inner
        self._resampler = StreamingResampler(src_rate, dst_rate)

    def push_audio(self, pcm: bytes) -> None:
        self._inner.push_audio(self._resampler.process(pcm))

    def flush(self) -> None:
        self._inner.flush()

    def __aiter__(self) -> AsyncIterator[TranscriptEvent]:
        return aiter(self._inner)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def keep_alive(self) -> None:
        await _keep_alive_all([self._inner])


class _FallbackStream:
    """An inner stream that reports its own failures to the fallback list, then re-raises."""

    def __init__(self, inner: STTStream, health: _Health, index: int) -> None:
        self._inner = inner
        self._health = health
        self._index = index
        self._reported = False
        self.provider = health.names[index]

    def push_audio(self, pcm: bytes) -> None:
        self._guard(self._inner.push_audio, pcm)

    def flush(self) -> None:
        self._guard(self._inner.flush)

    def __aiter__(self) -> AsyncIterator[TranscriptEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[TranscriptEvent]:
        events = aiter(self._inner)
        try:
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    self._report(exc)
                    raise
                yield event
        finally:
            # A stream that iterates itself is closed by `aclose()`, not by ending iteration.
            if events is not self._inner:
                await _aclose(events)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def keep_alive(self) -> None:
        # The engine looks the method up on the stream: forward it when the provider has one.
        await _keep_alive_all([self._inner])

    def _guard(self, call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:
            self._report(exc)
            raise

    def _report(self, exc: Exception) -> None:
        # A broken stream tends to fail on every pushed frame: count the stream once.
        if not self._reported:
            self._reported = True
            self._health.failed(self._index, exc)


class FallbackAgent(_FallbackList):
    """Answers with the first healthy agent; switches only before any text was produced.

    Accepts every agent shape the engine accepts: a callable or an object with `respond`,
    returning text, an awaitable of text or of a stream, or an async generator.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        *,
        recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
        clock: Clock = time.monotonic,
    ) -> None:
        self._agents = list(agents)
        super().__init__("agent", [_agent_name(a) for a in self._agents], recovery_interval, clock)

    def respond(self, ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
        return _first_healthy(
            self._health, lambda i: _reply_pieces(self._agents[i], ctx, transcript)
        )

    async def keep_alive(self) -> None:
        await _keep_alive_all(self._agents)


async def _first_healthy(
    health: _Health, open_stream: Callable[[int], AsyncIterator[T]]
) -> AsyncIterator[T]:
    """Streams from the first provider that works, moving on only while nothing was yielded."""
    errors: list[tuple[str, Exception]] = []
    for index in health.order():
        items = open_stream(index)
        produced = False
        try:
            while True:
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    health.succeeded(index)
                    return
                except Exception as exc:
                    health.failed(index, exc)
                    if produced:
                        raise
                    errors.append((health.names[index], exc))
                    break
                if item and not produced:
                    produced = True
                    health.succeeded(index)
                yield item
        finally:
            await _aclose(items)
    raise health.all_failed(errors)


async def _reply_pieces(agent: Agent, ctx: AgentContext, transcript: str) -> AsyncIterator[str]:
    """One agent's reply as non-empty text pieces, whatever shape the agent returns."""
    respond: Any = agent.respond if hasattr(agent, "respond") else agent
    result = respond(ctx, transcript)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, str):
        if result:
            yield result
        return
    try:
        async for piece in result:
            if piece:
                yield piece
    finally:
        await _aclose(result)


def _agent_name(agent: Agent) -> str:
    name = getattr(agent, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(agent, "__name__", None) or type(agent).__name__


def _names(kind: str, names: list[str]) -> list[str]:
    """Provider names made unique, since failures are counted per name."""
    if not names:
        raise SessionError(ErrorCode.INVALID_CONFIG, f"a {kind} fallback list needs a provider")
    unique: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in unique:
            n += 1
            candidate = f"{name}#{n}"
        unique.append(candidate)
    return unique


async def _keep_alive_all(members: Sequence[object]) -> None:
    """Keeps every member's connection warm, so a switch does not pay for a new one.

    One member failing does not stop the others; the first failure is raised afterwards so
    the engine's keep-alive report still sees it.
    """
    first_error: Exception | None = None
    for member in members:
        keep_alive = getattr(member, "keep_alive", None)
        if keep_alive is None:
            continue
        try:
            result = keep_alive()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:
        # Closing what already failed or finished must not mask the error that matters.
        log.debug("closing %r failed: %s", stream, exc)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
