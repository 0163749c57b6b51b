"""A process-wide pool of pocketsphinx decoders, each one living in its own worker process.

Why processes and not threads: the pocketsphinx binding holds the GIL for the whole of every
`process_raw` and `end_utt` call (measured: over a second for `end_utt` on a 12 s utterance),
so a decoder on an executor thread would still freeze the event loop, and with it the audio of
every other call, and two decoders could never use two cores. A child process per decoder keeps
the loop free; the parent only does blocking pipe I/O on executor threads, which releases the
GIL while it waits.

Why a pool: a decoder costs ~100 MB and ~0.5 s to load, so calls borrow one per utterance and
give it back instead of owning one each. The pool is not tied to an event loop: waiters are woken
with `call_soon_threadsafe`, so one pool serves any loop and `release` works from any thread.

Why one pool per configuration: a decoder is built for one search (the default language model,
or a menu's grammar, or a list of keyphrases), so decoders for different searches are not
interchangeable; `default_pool(**config)` keeps one pool per distinct configuration.

Searches besides the default language model (https://cmusphinx.github.io/doc/pocketsphinx/,
`ps_add_jsgf_string`, `ps_add_kws`, `ps_activate_search`): the config keys `grammar` (JSGF text)
and `keyphrases` (phrase -> detection threshold) are not pocketsphinx options but are read by
the worker, which builds its decoder without the language model (measured: ~26 MB and 0.1 s to
load, against ~90 MB and 0.45 s with it) and activates that search instead.

Running this module (`python -m providers.stt.decoder_pool CONFIG_JSON`) is the worker side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from session.errors import ErrorCode, ProviderError

__all__ = ["DecoderPool", "DecoderProcess", "Recognition", "default_pool", "default_pool_size"]

PROVIDER = "pocketsphinx"
# Config keys read by the worker itself (see the module docstring), never passed to Decoder.
GRAMMAR = "grammar"
KEYPHRASES = "keyphrases"
_SEARCH_NAME = "menu"
# A keyphrase is reported only once `kws_delay` frames past its end were decoded, so a phrase
# that ends the utterance needs some audio after it: this much quiet line noise is decoded
# before each keyphrase utterance ends.
_KWS_TAIL_SECONDS = 0.4
_KWS_TAIL_RMS = 8.0
_WORKER_RATE = 16000
# Grammar utterances are decoded in one batch when they end, with the cepstral mean of the
# whole utterance: a one-word answer is too short for the running mean to settle, and the
# grammar then picks the wrong word ("sales" -> "billing" with streaming normalisation, every
# time, in the tests). So a grammar search gives no interim hypotheses. A menu answer is short;
# audio past this much of one segment is not decoded.
_GRAMMAR_MAX_SECONDS = 10
_GRAMMAR_MAX_BYTES = _GRAMMAR_MAX_SECONDS * _WORKER_RATE * 2

# Wire format, both directions: 1-byte tag, 4-byte big-endian length, payload.
# Requests carry raw PCM (audio) or nothing; replies carry JSON.
_HEADER = struct.Struct("!cI")
_OP_START = b"S"
_OP_AUDIO = b"A"
_OP_END = b"E"
_REPLY_OK = b"o"
_REPLY_ERROR = b"e"

# pocketsphinx segment words that are not words: sentence marks, silence, noise fillers.
_NON_WORD_PREFIXES = ("<", "[", "+")


@dataclass(frozen=True, slots=True)
class Recognition:
    """The final result of one utterance."""

    text: str
    confidence: float | None  # mean word posterior, None when nothing was recognised
    cmn: str = ""  # cepstral mean after the utterance: where this caller's next one starts


def default_pool_size() -> int:
    return max(2, os.cpu_count() or 1)


def _stt_error(message: str, *, retryable: bool = True) -> ProviderError:
    return ProviderError(ErrorCode.STT_FAILED, PROVIDER, message, retryable=retryable)


class DecoderProcess:
    """One pocketsphinx `Decoder` in a child process.

    Every method blocks until the child answers, so call them from an executor thread, and
    from one thread at a time: the pool lends a decoder to exactly one borrower.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        # The child imports this module by name; make that work whatever the parent's cwd is.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __spec__.name if __spec__ else __name__, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.pid = self._proc.pid
        try:
            self._read_reply()  # the child answers once its Decoder is loaded
        except ProviderError:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def start_utt(self, cmn: str = "") -> None:
        """Opens an utterance, normalising from `cmn` ("" = the model's initial mean)."""
        self._request(_OP_START, cmn.encode())

    def process(self, pcm: bytes) -> str:
        """Feeds 16 kHz PCM to the open utterance; returns the current hypothesis."""
        return str(self._request(_OP_AUDIO, pcm)["hyp"])

    def end_utt(self) -> Recognition:
        """Ends the utterance (a no-op result when none is open) and returns the final result."""
        reply = self._request(_OP_END)
        return Recognition(text=reply["text"], confidence=reply["confidence"], cmn=reply["cmn"])

    def close(self) -> None:
        # SIGKILL is safe: a decoder holds nothing worth flushing, and the wait is then instant.
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=5)
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()

    def _request(self, op: bytes, payload: bytes = b"") -> dict[str, Any]:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(_HEADER.pack(op, len(payload)))
            stdin.write(payload)
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise _stt_error(f"decoder process {self.pid} is gone: {exc}") from exc
        return self._read_reply()

    def _read_reply(self) -> dict[str, Any]:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            header = stdout.read(_HEADER.size)
            tag, size = _HEADER.unpack(header) if len(header) == _HEADER.size else (b"", 0)
            body = stdout.read(size) if tag else b""
        except (ValueError, OSError) as exc:
            raise _stt_error(f"decoder process {self.pid} is gone: {exc}") from exc
        if not tag or len(body) != size:
            raise _stt_error(f"decoder process {self.pid} exited (code {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(body)
        if tag == _REPLY_ERROR:
            raise _stt_error(str(reply.get("error")), retryable=bool(reply.get("retryable")))
        return reply


class DecoderPool:
    """At most `size` decoder processes, made lazily, lent to one utterance at a time."""

    def __init__(self, size: int | None = None, **decoder_config: Any) -> None:
        if size is not None and size < 1:
            raise ValueError(f"size must be >= 1 (or None for the default), got {size}")
        self.size = size if size is not None else default_pool_size()
        self.config: dict[str, Any] = {"loglevel": "FATAL", **decoder_config}
        try:
            json.dumps(self.config)
        except TypeError as exc:
            raise ValueError(f"decoder_config must be JSON-serialisable: {exc}") from exc
        self._lock = threading.Lock()
        self._idle: list[DecoderProcess] = []
        self._count = 0  # decoders alive or being made: the number that `size` bounds
        # A waiter's future resolves to a decoder, or to None meaning "a slot is free, make one".
        self._waiters: deque[asyncio.Future[DecoderProcess | None]] = deque()
        self._closed = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads for the blocking pipe I/O, sized so a borrower never queues behind others."""
        with self._lock:
            if self._executor is None:
                # Two per decoder: one request in flight plus one clean-up after a cancellation.
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2 * self.size, thread_name_prefix="pocketsphinx"
                )
            return self._executor

    @property
    def created(self) -> int:
        """Decoders alive or being made."""
        return self._count

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def in_use(self) -> int:
        """Decoders lent out, or being made for a borrower."""
        return self._count - len(self._idle)

    async def acquire(self) -> DecoderProcess:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[DecoderProcess | None] | None = None
        with self._lock:
            if self._closed:
                raise _stt_error("decoder pool is closed", retryable=False)
            if self._idle:
                return self._idle.pop()
            if self._count < self.size:
                self._count += 1
            else:
                waiter = loop.create_future()
                self._waiters.append(waiter)
        if waiter is not None:
            try:
                granted = await waiter
            except asyncio.CancelledError:
                self._abandon(waiter)
                raise
            if granted is not None:
                return granted
        return await self._create()

    def release(self, decoder: DecoderProcess) -> None:
        """Gives a decoder back (its utterance must be ended). Callable from any thread."""
        if self._closed or not decoder.alive:
            self.discard(decoder)
        else:
            self._hand_over(decoder)

    def discard(self, decoder: DecoderProcess) -> None:
        """Drops a broken decoder; its slot goes to the next borrower, who makes a fresh one."""
        decoder.close()
        self._hand_over(None)

    async def warm_up(self, count: int | None = None) -> None:
        """Loads decoders ahead of the first call so its first utterance pays no load time."""
        wanted = min(count if count is not None else self.size, self.size)
        decoders = await asyncio.gather(*(self.acquire() for _ in range(wanted)))
        for decoder in decoders:
            self.release(decoder)

    def close(self) -> None:
        """Ends idle decoder processes now and borrowed ones when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            waiters, self._waiters = self._waiters, deque()
        for decoder in idle:
            decoder.close()
        for waiter in waiters:
            self._call_on_loop(waiter, self._fail_closed, waiter)
        # The executor stays: borrowers still need it to end their utterances and give back.

    async def _create(self) -> DecoderProcess:
        # A concurrent future whose completion the pool handles itself: if our caller is
        # cancelled or its loop goes away mid-creation, the decoder still lands in the pool.
        job = self.executor.submit(DecoderProcess, self.config)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            job.add_done_callback(self._adopt)
            raise
        except ProviderError:
            self._hand_over(None)
            raise
        except Exception as exc:
            self._hand_over(None)
            raise _stt_error(f"cannot start a decoder process: {exc}") from exc

    def _adopt(self, job: concurrent.futures.Future[DecoderProcess]) -> None:
        if job.cancelled() or job.exception() is not None:
            self._hand_over(None)
        else:
            self.release(job.result())

    def _abandon(self, waiter: asyncio.Future[DecoderProcess | None]) -> None:
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return
        # Granted just before the cancellation landed: pass the grant on.
        if waiter.done() and not waiter.cancelled():
            self._hand_over(waiter.result())

    def _hand_over(self, item: DecoderProcess | None) -> None:
        """Gives a decoder (or, for None, a free slot) to the oldest waiter, else keeps it."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if self._call_on_loop(waiter, self._grant, waiter, item):
                    return
            if item is None or self._closed:  # a freed slot, or a decoder nobody may use now
                self._count -= 1
            else:
                self._idle.append(item)
        if item is not None and self._closed:
            item.close()

    def _grant(
        self, waiter: asyncio.Future[DecoderProcess | None], item: DecoderProcess | None
    ) -> None:
        if waiter.done():  # cancelled while the grant was on its way
            self._hand_over(item)
        else:
            waiter.set_result(item)

    @staticmethod
    def _fail_closed(waiter: asyncio.Future[DecoderProcess | None]) -> None:
        if not waiter.done():
            waiter.set_exception(_stt_error("decoder pool is closed", retryable=False))

    @staticmethod
    def _call_on_loop(waiter: asyncio.Future[Any], callback: Any, *args: Any) -> bool:
        try:
            waiter.get_loop().call_soon_threadsafe(callback, *args)
        except RuntimeError:  # that waiter's loop is closed: nobody is waiting there any more
            return False
        return True


_default_pools: dict[str, DecoderPool] = {}
_default_pool_lock = threading.Lock()


def default_pool(**decoder_config: Any) -> DecoderPool:
    """The process-wide pool for one decoder configuration (made on first use; decoders
    themselves are made on demand). No arguments: the default language-model pool."""
    try:
        key = json.dumps(decoder_config, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"decoder_config must be JSON-serialisable: {exc}") from exc
    with _default_pool_lock:
        pool = _default_pools.get(key)
        if pool is None:
            pool = _default_pools[key] = DecoderPool(**decoder_config)
        return pool


# ---------------------------------------------------------------------------------------------
# Worker side: runs in the child process.


def _reply(out: IO[bytes], tag: bytes, body: Mapping[str, Any]) -> None:
    data = json.dumps(body).encode()
    out.write(_HEADER.pack(tag, len(data)))
    out.write(data)
    out.flush()


def _final_result(decoder: Any, grammar: bool = False) -> dict[str, Any]:
    # The mean read now includes this utterance: the parent keeps it for the same caller.
    hyp = decoder.hyp()
    # Keyphrase hypotheses separate detections by two spaces and end with one.
    text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
    if grammar and text:
        # A grammar always ends on some allowed phrase, so every word in it looks certain;
        # the whole path's posterior is what drops when the caller said something else.
        return {"text": text, "confidence": _clamp(hyp.prob), "cmn": decoder.get_cmn()}
    posteriors = [
        _clamp(seg.prob)
        for seg in decoder.seg() or ()  # None when no search path reached an end
        if not seg.word.startswith(_NON_WORD_PREFIXES)
    ]
    confidence = sum(posteriors) / len(posteriors) if text and posteriors else None
    return {"text": text, "confidence": confidence, "cmn": decoder.get_cmn()}


def _clamp(probability: float) -> float:
    return min(1.0, max(0.0, probability))


def _make_decoder(config: dict[str, Any]) -> Any:
    from pocketsphinx import Decoder

    grammar = config.pop(GRAMMAR, None)
    keyphrases: dict[str, float] | None = config.pop(KEYPHRASES, None)
    if grammar is None and keyphrases is None:
        return Decoder(**config)
    # Without a search a Decoder crashes on first use, so the one wanted is added at once.
    decoder = Decoder(**{"lm": None, **config})
    if grammar is not None:
        decoder.add_jsgf_string(_SEARCH_NAME, grammar)
    else:
        assert keyphrases is not None
        # Per-phrase thresholds exist only in the keyphrase file format: "phrase /threshold/".
        with tempfile.NamedTemporaryFile("w", suffix=".kws", delete=False) as listing:
            listing.writelines(
                f"{phrase} /{threshold:g}/\n" for phrase, threshold in keyphrases.items()
            )
        try:
            decoder.add_kws(_SEARCH_NAME, listing.name)
        finally:
            os.unlink(listing.name)
    decoder.activate_search(_SEARCH_NAME)
    return decoder


def _quiet_line(seconds: float, rms: float) -> bytes:
    rng = random.Random(0)
    samples = (
        max(-32768, min(32767, round(rng.gauss(0.0, rms))))
        for _ in range(int(_WORKER_RATE * seconds))
    )
    return struct.pack(f"<{int(_WORKER_RATE * seconds)}h", *samples)


def _serve(config: dict[str, Any]) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when decoders
    # end (it closes our stdin), so a draining gateway keeps its decoders.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    # Anything the C library prints must not land in the protocol channel.
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    grammar = GRAMMAR in config
    tail = _quiet_line(_KWS_TAIL_SECONDS, _KWS_TAIL_RMS) if KEYPHRASES in config else b""
    # A grammar utterance is decoded whole when it ends (see `_GRAMMAR_MAX_SECONDS`).
    held = bytearray()
    try:
        decoder = _make_decoder(config)
        initial_cmn = decoder.get_cmn()
    except Exception as exc:
        _reply(out, _REPLY_ERROR, {"error": f"cannot create decoder: {exc}", "retryable": False})
        return
    _reply(out, _REPLY_OK, {})
    in_utterance = False
    while True:
        header = requests.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the parent closed the pipe or died: nothing left to do
        op, size = _HEADER.unpack(header)
        payload = requests.read(size)
        try:
            if op == _OP_START:
                if in_utterance:
                    decoder.end_utt()
                # Channel normalisation belongs to the caller, not to whoever had this
                # decoder last: each stream brings its own mean (or starts from the model's).
                decoder.set_cmn(payload.decode() or initial_cmn)
                decoder.start_utt()
                in_utterance = True
                held.clear()
                _reply(out, _REPLY_OK, {})
            elif op == _OP_AUDIO:
                if grammar:
                    held += payload[: max(0, _GRAMMAR_MAX_BYTES - len(held))]
                    _reply(out, _REPLY_OK, {"hyp": ""})
                    continue
                if payload:  # process_raw rejects an empty buffer
                    decoder.process_raw(payload)
                hyp = decoder.hyp()
                text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
                _reply(out, _REPLY_OK, {"hyp": text})
            elif op == _OP_END:
                if not in_utterance:
                    _reply(out, _REPLY_OK, {"text": "", "confidence": None, "cmn": ""})
                    continue
                in_utterance = False
                if held:
                    decoder.process_raw(bytes(held), full_utt=True)
                    held.clear()
                if tail:
                    decoder.process_raw(tail)
                decoder.end_utt()
                _reply(out, _REPLY_OK, _final_result(decoder, grammar))
            else:
                _reply(out, _REPLY_ERROR, {"error": f"unknown request {op!r}"})
        except Exception as exc:
            _reply(out, _REPLY_ERROR, {"error": f"{type(exc).__name__}: {exc}", "retryable": True})


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
