"""Offline speech recognition with pocketsphinx (bundled US English model, 16 kHz input).

Streams borrow a decoder from the shared `DecoderPool` for one speech segment at a time, so a
call that is silent or listening to the agent holds no decoder. All decoding happens in the
pool's worker processes; the event loop only moves buffers and events.

Menus ("say sales, support or billing") are where the general language model is weakest: one
short word with no context often comes out as another word ("sales" -> "they will"). Two
searches made for them (https://cmusphinx.github.io/doc/pocketsphinx/search_8h.html):

- `grammar`: a JSGF grammar; the result is always one of the phrases it allows. For speech
  outside the grammar the final is either "" (no path through the grammar fits at all) or the
  nearest allowed phrase with a low confidence: the confidence of a grammar result is the
  posterior of the whole phrase (above 0.8 for clear menu words over a phone line, about 0.5
  for an unrelated sentence forced onto a menu word), so compare it with a threshold before
  acting on the answer. A grammar segment is decoded whole when it ends (a one-word answer is
  too short for streaming channel normalisation to settle), so it gives no interim hypotheses,
  and only its first 10 s are decoded.
- `keyphrases`: keyword spotting, each phrase with its own detection threshold (longer phrases
  want smaller ones, 1e-20 .. 1e-40; short words 1e-5 .. 1e-20). Everything else is ignored, so
  the final is "" unless a phrase was spotted. Thresholds need tuning per phrase; a grammar is
  the better choice for a closed menu, spotting for a phrase inside free speech.

Decoders for a search are separate from the default ones: each configuration has its own pool.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import random
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from session.audio import SAMPLE_WIDTH
from session.errors import ErrorCode, ProviderError
from session.interfaces import TranscriptEvent

from .decoder_pool import (
    GRAMMAR,
    KEYPHRASES,
    DecoderPool,
    DecoderProcess,
    Recognition,
    default_pool,
)

__all__ = ["PocketSphinxSTT", "PocketSphinxStream"]

PROVIDER: Final = "pocketsphinx"
SAMPLE_RATE: Final = 16000  # the bundled model's feat.params (upperf 6800) rules out 8 kHz
# Cepstral mean normalisation needs some signal before the first word to settle: without it the
# first word is often lost ("hello how are you" -> "oh how are you"). Quiet line noise works
# better than digital zeros, whose log energy is a floor value no real line produces.
WARMUP_SECONDS: Final = 0.4
WARMUP_NOISE_RMS: Final = 8.0
# Upper bound on audio per decoder request: keeps interim hypotheses coming while catching up.
MAX_BATCH_SECONDS: Final = 0.5
DEFAULT_KWS_THRESHOLD: Final = 1e-20
_JSGF_HEADER: Final = re.compile(r"^\s*#JSGF\b")

_T = TypeVar("_T")


def _line_noise(seconds: float, rms: float) -> bytes:
    rng = random.Random(0)  # fixed seed: the same audio always gives the same transcript
    samples = array.array(
        "h", (round(rng.gauss(0.0, rms)) for _ in range(int(SAMPLE_RATE * seconds)))
    )
    return samples.tobytes()


_WARMUP: Final = _line_noise(WARMUP_SECONDS, WARMUP_NOISE_RMS)


class _Flush:
    """Marks the end of a speech segment in the stream's work queue."""


_FLUSH: Final = _Flush()
_END: Final = object()  # end of the event stream


class PocketSphinxStream:
    """One call's recognition stream (see `session.interfaces.STTStream`).

    Audio and segment ends are queued in order; a worker task drains the queue through a
    borrowed decoder. A stream that fails raises the `ProviderError` from iteration and ends.
    """

    def __init__(self, pool: DecoderPool, executor: concurrent.futures.Executor) -> None:
        self._pool = pool
        self._executor = executor
        self._work: deque[bytearray | _Flush] = deque()
        self._wake = asyncio.Event()
        self._events: asyncio.Queue[TranscriptEvent | ProviderError | object] = asyncio.Queue()
        self._decoder: DecoderProcess | None = None
        self._inflight: concurrent.futures.Future[object] | None = None
        self._last_hyp = ""
        self._cmn = ""  # this caller's cepstral mean, carried from one segment to the next
        self._closed = False
        self._max_batch = int(SAMPLE_RATE * MAX_BATCH_SECONDS) * SAMPLE_WIDTH
        self._task = asyncio.create_task(self._run(), name="pocketsphinx-stream")

    def push_audio(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return
        tail = self._work[-1] if self._work else None
        if isinstance(tail, bytearray):
            tail += pcm
        else:
            self._work.append(bytearray(pcm))
        self._wake.set()

    def flush(self) -> None:
        if self._closed:
            return
        self._work.append(_FLUSH)
        self._wake.set()

    def __aiter__(self) -> PocketSphinxStream:
        return self

    async def __anext__(self) -> TranscriptEvent:
        item = await self._events.get()
        if isinstance(item, TranscriptEvent):
            return item
        self._events.put_nowait(_END)  # later iterations end too
        if isinstance(item, ProviderError):
            raise item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stops recognising and returns any borrowed decoder to the pool before returning."""
        self._closed = True
        self._work.clear()
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _run(self) -> None:
        try:
            while True:
                while not self._work:
                    self._wake.clear()
                    await self._wake.wait()
                item = self._work.popleft()
                if isinstance(item, _Flush):
                    await self._finish_segment()
                    continue
                if len(item) > self._max_batch:
                    self._work.appendleft(item[self._max_batch :])
                    del item[self._max_batch :]
                await self._feed(bytes(item))
        except ProviderError as exc:
            self._events.put_nowait(exc)
        except Exception as exc:  # a bug here must still end the stream visibly
            self._events.put_nowait(
                ProviderError(ErrorCode.STT_FAILED, PROVIDER, f"{type(exc).__name__}: {exc}")
            )
        finally:
            self._closed = True
            try:
                await self._give_back()
            finally:
                self._events.put_nowait(_END)

    async def _feed(self, pcm: bytes) -> None:
        if self._decoder is None:
            self._decoder = await self._pool.acquire()
            await self._call(self._decoder.start_utt, self._cmn)
            pcm = _WARMUP + pcm
        hyp = await self._call(self._decoder.process, pcm)
        if hyp and hyp != self._last_hyp:
            self._last_hyp = hyp
            self._events.put_nowait(TranscriptEvent(hyp, is_final=False))

    async def _finish_segment(self) -> None:
        decoder = self._decoder
        if decoder is None:  # nothing heard since the last final: still exactly one final
            self._events.put_nowait(TranscriptEvent("", is_final=True))
            return
        result: Recognition = await self._call(decoder.end_utt)
        self._decoder = None
        self._last_hyp = ""
        self._cmn = result.cmn
        self._pool.release(decoder)
        self._events.put_nowait(
            TranscriptEvent(result.text, is_final=True, confidence=result.confidence)
        )

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        job = self._executor.submit(fn, *args)
        self._inflight = job
        try:
            return await asyncio.wrap_future(job)
        except ProviderError:
            self._discard()
            raise
        except asyncio.CancelledError:
            raise  # _give_back waits for the job before touching the decoder again
        except Exception as exc:
            self._discard()
            raise ProviderError(ErrorCode.STT_FAILED, PROVIDER, str(exc)) from exc
        finally:
            if job.done():
                self._inflight = None

    def _discard(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            self._pool.discard(decoder)

    async def _give_back(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            return
        job = self._executor.submit(_retire, self._pool, decoder, self._inflight)
        self._inflight = None
        # Shielded: a second cancellation must not strand the decoder outside the pool.
        await asyncio.shield(asyncio.wrap_future(job))


def _retire(
    pool: DecoderPool, decoder: DecoderProcess, inflight: concurrent.futures.Future[object] | None
) -> None:
    """Ends an abandoned utterance and returns the decoder (blocking: runs on an executor)."""
    if inflight is not None:
        concurrent.futures.wait([inflight])  # one request at a time on the decoder's pipe
    try:
        decoder.end_utt()
    except Exception:
        pool.discard(decoder)
    else:
        pool.release(decoder)


class PocketSphinxSTT:
    """Recogniser factory; one instance can serve every call (the pool is what is shared).

    `grammar` (JSGF text) or `keyphrases` (phrases, or phrase -> threshold) switch from the
    general language model to a menu search; see the module docstring for what each returns.
    """

    name = PROVIDER
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        pool: DecoderPool | None = None,
        executor: concurrent.futures.Executor | None = None,
        *,
        grammar: str | None = None,
        keyphrases: Sequence[str] | Mapping[str, float] | None = None,
        kws_threshold: float = DEFAULT_KWS_THRESHOLD,
    ) -> None:
        self.search_config = _search_config(grammar, keyphrases, kws_threshold)
        if pool is not None and self.search_config:
            mismatched = {k: v for k, v in self.search_config.items() if pool.config.get(k) != v}
            if mismatched:
                raise ValueError(
                    f"the pool's decoders were not built for this {', '.join(mismatched)}: "
                    "give the search to the DecoderPool, or leave the pool out"
                )
        self._pool = pool
        self._executor = executor

    @property
    def pool(self) -> DecoderPool:
        return self._pool if self._pool is not None else default_pool(**self.search_config)

    async def open_stream(self) -> PocketSphinxStream:
        pool = self.pool
        return PocketSphinxStream(pool, self._executor or pool.executor)

    async def warm_up(self, count: int = 1) -> None:
        """Loads decoders before the first call needs them (they take ~0.5 s each); with a
        grammar or keyphrases this is also where a word missing from the dictionary shows."""
        await self.pool.warm_up(count)


def _search_config(
    grammar: str | None,
    keyphrases: Sequence[str] | Mapping[str, float] | None,
    kws_threshold: float,
) -> dict[str, Any]:
    """The decoder-pool config keys for a menu search, validated here so mistakes fail fast."""
    if grammar is not None and keyphrases is not None:
        raise ValueError("give either grammar or keyphrases, not both")
    if grammar is not None:
        if not isinstance(grammar, str) or not _JSGF_HEADER.match(grammar):
            raise ValueError("grammar must be JSGF text starting with a '#JSGF V1.0;' header")
        if "public" not in grammar:
            raise ValueError("grammar must declare a public rule (the one that is recognised)")
        return {GRAMMAR: grammar}
    if keyphrases is None:
        return {}
    if isinstance(keyphrases, str):
        raise ValueError("keyphrases must be a list of phrases (or a mapping), not one string")
    thresholds = (
        dict(keyphrases)
        if isinstance(keyphrases, Mapping)
        else dict.fromkeys(keyphrases, kws_threshold)
    )
    if not thresholds:
        raise ValueError("keyphrases must not be empty")
    normalised: dict[str, float] = {}
    for phrase, threshold in thresholds.items():
        words = phrase.split() if isinstance(phrase, str) else []
        if not words or any("/" in word for word in words):
            raise ValueError(f"keyphrase must be words without '/', got {phrase!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(
                f"threshold for keyphrase {phrase!r} must be in (0, 1], got {threshold}"
            )
        normalised[" ".join(words).lower()] = float(threshold)
    return {KEYPHRASES: normalised}
