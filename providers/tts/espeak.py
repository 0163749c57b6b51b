"""Offline speech synthesis with eSpeak NG, through ctypes.

eSpeak is one process-global C library with global voice/rate state and no thread safety, so
every call into it happens on one dedicated thread, one request at a time, each request setting
the voice and rate it wants. Synthesis is synchronous mode: `espeak_Synth` returns when the text
is done and hands audio over through a callback as it goes, which is where streaming comes from.
ctypes releases the GIL during `espeak_Synth`, so the event loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import re
from collections.abc import AsyncIterator, Callable
from ctypes import POINTER, c_char_p, c_int, c_short, c_size_t, c_uint, c_void_p
from typing import Final

import espeakng_loader

from session.errors import ErrorCode, ProviderError

__all__ = ["ESpeakTTS"]

PROVIDER: Final = "espeak"
MIN_RATE_WPM: Final = 80  # eSpeak's own limits for espeakRATE
MAX_RATE_WPM: Final = 450

# Values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_BUFFER_MS: Final = 0  # 0 = eSpeak's default, 60 ms per callback: small enough to stream
_ESPEAK_RATE: Final = 1
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_EE_OK: Final = 0
_CONTINUE: Final = 0  # synth callback return values
_ABORT: Final = 1


class _Voice(ctypes.Structure):
    """espeak_VOICE, used to pick a voice by language code."""

    _fields_ = (
        ("name", c_char_p),
        ("languages", c_char_p),
        ("identifier", c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", c_int),
        ("spare", c_void_p),
    )


_LANGUAGE_TAG: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")

_SynthCallback = ctypes.CFUNCTYPE(c_int, POINTER(c_short), c_int, c_void_p)

# The one thread allowed to touch the library.
_ESPEAK_THREAD: Final = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="espeak"
)


def _tts_error(message: str, *, retryable: bool = True) -> ProviderError:
    return ProviderError(ErrorCode.TTS_FAILED, PROVIDER, message, retryable=retryable)


class _Request:
    """One synthesis: its settings, where its audio goes, and whether to stop early."""

    __slots__ = ("cancelled", "deliver", "rate_wpm", "text", "voice")

    def __init__(
        self, text: str, voice: str, rate_wpm: int, deliver: Callable[[bytes], None]
    ) -> None:
        self.text = text
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.deliver = deliver  # called on the eSpeak thread with each chunk of PCM
        self.cancelled = False  # set from any thread; the next callback aborts the synthesis


class _Engine:
    """The loaded library. Only ever used on `_ESPEAK_THREAD`."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
        lib.espeak_Initialize.restype = c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [c_char_p]
        lib.espeak_SetVoiceByName.restype = c_int
        lib.espeak_SetVoiceByProperties.argtypes = [POINTER(_Voice)]
        lib.espeak_SetVoiceByProperties.restype = c_int
        lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
        lib.espeak_SetParameter.restype = c_int
        lib.espeak_Synth.argtypes = [
            c_void_p,  # text
            c_size_t,  # size, including the terminating NUL
            c_uint,  # position
            c_int,  # position_type
            c_uint,  # end_position
            c_uint,  # flags
            POINTER(c_uint),  # unique_identifier
            c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = c_int
        data_path = espeakng_loader.get_data_path().encode()
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, 0)
        if sample_rate <= 0:
            raise _tts_error(f"espeak_Initialize failed ({sample_rate})", retryable=False)
        self.sample_rate: int = sample_rate
        self._lib = lib
        # Kept on self: ctypes frees the trampoline once the Python object is collected.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._request: _Request | None = None
        self._voice: str | None = None
        self._rate_wpm: int | None = None

    def select_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        self._voice = None
        status = self._lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK and _LANGUAGE_TAG.fullmatch(voice):
            # Names are eSpeak's own ("en-us", "gmw/en-GB-x-rp"); settings often hold a
            # language tag ("en-gb") instead, which eSpeak matches by properties.
            wanted = _Voice(languages=voice.lower().encode())
            status = self._lib.espeak_SetVoiceByProperties(ctypes.byref(wanted))
        if status != _EE_OK:
            raise ValueError(f"voice: eSpeak has no voice {voice!r} (error {status})")
        self._voice = voice
        self._rate_wpm = None  # a voice change resets the rate

    def set_rate(self, rate_wpm: int) -> None:
        if rate_wpm == self._rate_wpm:
            return
        status = self._lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
        if status != _EE_OK:
            raise _tts_error(f"cannot set rate {rate_wpm} (error {status})")
        self._rate_wpm = rate_wpm

    def synthesize(self, request: _Request) -> None:
        if request.cancelled:
            return
        self.select_voice(request.voice)
        self.set_rate(request.rate_wpm)
        text = request.text.encode()
        self._request = request
        try:
            status = self._lib.espeak_Synth(
                text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
        finally:
            self._request = None
        if status != _EE_OK:
            raise _tts_error(f"espeak_Synth failed (error {status})")

    def _on_audio(self, wav: ctypes._Pointer[c_short], numsamples: int, events: int) -> int:
        # An exception escaping a ctypes callback is only printed, so every path returns a code.
        request = self._request
        if request is None or request.cancelled:
            return _ABORT
        if numsamples > 0 and wav:
            try:
                request.deliver(ctypes.string_at(wav, numsamples * 2))
            except Exception:
                request.cancelled = True
                return _ABORT
        return _CONTINUE


_engine: _Engine | None = None
# Written on the eSpeak thread, read anywhere: lets later constructors skip the round trip.
_known_voices: set[str] = set()


def _get_engine() -> _Engine:
    # Only called on the eSpeak thread, so no lock is needed.
    global _engine
    if _engine is None:
        try:
            _engine = _Engine()
        except OSError as exc:
            raise _tts_error(f"cannot load libespeak-ng: {exc}", retryable=False) from exc
    return _engine


def _check_voice(voice: str) -> int:
    engine = _get_engine()
    engine.select_voice(voice)
    _known_voices.add(voice)
    return engine.sample_rate


def _run(request: _Request) -> None:
    _get_engine().synthesize(request)


class ESpeakTTS:
    """eSpeak NG voice. Instances are cheap; they share the one engine thread."""

    name = PROVIDER

    def __init__(self, voice: str = "en-us", rate_wpm: int = 175) -> None:
        if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
            raise ValueError(
                f"rate_wpm must be {MIN_RATE_WPM}..{MAX_RATE_WPM} words per minute, got {rate_wpm}"
            )
        self.voice = voice
        self.rate_wpm = rate_wpm
        if _engine is not None and voice in _known_voices:
            # Known already: no need to queue behind whatever the eSpeak thread is doing.
            self.sample_rate: int = _engine.sample_rate
        else:
            # Loads the library on first use (a few ms) and fails now on an unknown voice
            # rather than in the middle of a call.
            self.sample_rate = _ESPEAK_THREAD.submit(_check_voice, voice).result()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yields PCM chunks (~60 ms each) at `sample_rate` as eSpeak produces them."""
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        def deliver(chunk: bytes) -> None:
            # Raises RuntimeError once the loop is closed, which aborts the synthesis.
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)

        request = _Request(text, self.voice, self.rate_wpm, deliver)
        job = _ESPEAK_THREAD.submit(_run, request)
        job.add_done_callback(lambda _: _notify_done(loop, chunks))
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            job.result()  # done by now: the end marker is queued after the last chunk
        except ProviderError:
            raise
        except Exception as exc:
            raise _tts_error(f"{type(exc).__name__}: {exc}") from exc
        finally:
            # Consumer gone early (closed generator, cancelled task): stop eSpeak at its next
            # chunk, or drop the request if it has not started.
            request.cancelled = True
            job.cancel()

    def synthesize_blocking(self, text: str) -> bytes:
        """The whole utterance at once, for callers outside an event loop (CLI tools)."""
        if not text.strip():
            return b""
        pieces: list[bytes] = []
        request = _Request(text, self.voice, self.rate_wpm, pieces.append)
        try:
            _ESPEAK_THREAD.submit(_run, request).result()
        except ProviderError:
            raise
        except Exception as exc:
            raise _tts_error(f"{type(exc).__name__}: {exc}") from exc
        return b"".join(pieces)


def _notify_done(loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes | None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
        loop.call_soon_threadsafe(chunks.put_nowait, None)
