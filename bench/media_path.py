"""Media-path benchmark: what one 20 ms frame costs the gateway, in microseconds.

    python -m bench.media_path [--repeat N]

Inbound: a recorded Twilio text frame -> parsed and checked -> μ-law decoded -> VAD.
Outbound: 20 ms of PCM -> μ-law -> base64 -> JSON media message.
Session: the same inbound frame pushed through `VoiceSession.process_audio` (VAD, speech
tracking, pre-roll), on silence and on speech. Frames come from the real recorded call in
the shared fixtures, so the VAD sees real phone audio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from providers.vad.webrtc import WebRtcVad
from session.audio import StreamingResampler
from session.config import Config
from session.session import VoiceSession
from telephony.g711 import pcm_to_ulaw, ulaw_to_pcm
from telephony.twilio.connection import MediaStreamConnection
from telephony.twilio.messages import encode_media

FIXTURE = Path(__file__).resolve().parents[2] / "shared/fixtures/twilio-recorded-call.jsonl"


def _load_frames(path: Path) -> tuple[list[str], list[str]]:
    lines = path.read_text().splitlines()
    head = [line for line in lines if '"media"' not in line and '"stop"' not in line]
    media = [line for line in lines if '"event":"media"' in line]
    return head, media


def _per_op_us(fn: Callable[[], None], ops: int, repeat: int) -> float:
    """Median over `repeat` runs of the mean cost per operation."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) / ops * 1e6)
    return statistics.median(samples)


class _NullTransport:
    sample_rate = 8000

    async def send_audio(self, pcm: bytes) -> None: ...

    async def mark(self, name: str) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


class _NullSTT:
    name = "null"
    sample_rate = 8000

    async def open_stream(self) -> _NullStream:
        return _NullStream()


class _NullStream:
    def push_audio(self, pcm: bytes) -> None: ...

    def flush(self) -> None: ...

    def __aiter__(self) -> _NullStream:
        return self

    async def __anext__(self) -> None:
        await asyncio.Event().wait()

    async def aclose(self) -> None: ...


def run(repeat: int, fixture: Path) -> list[tuple[str, float]]:
    head, media = _load_frames(fixture)
    results: list[tuple[str, float]] = []

    def inbound() -> None:
        conn = MediaStreamConnection()
        for line in head:
            conn.receive(line)
        vad = WebRtcVad(sample_rate=8000)
        for line in media:
            event = conn.receive(line)
            vad.is_speech(ulaw_to_pcm(event.payload))  # type: ignore[union-attr]

    results.append(("inbound frame (parse+decode+VAD)", _per_op_us(inbound, len(media), repeat)))

    def parse_only() -> None:
        conn = MediaStreamConnection()
        for line in head:
            conn.receive(line)
        for line in media:
            conn.receive(line)

    results.append(("  of which parse+check", _per_op_us(parse_only, len(media), repeat)))

    pcm_frames = [ulaw_to_pcm(json_payload) for json_payload in _payloads(media)]

    def outbound() -> None:
        for pcm in pcm_frames:
            encode_media("MZ0123456789abcdef0123456789abcdef", pcm_to_ulaw(pcm))

    cost = _per_op_us(outbound, len(pcm_frames), repeat)
    results.append(("outbound 20 ms frame (ulaw+b64+JSON)", cost))

    upsample = StreamingResampler(8000, 16000)

    def resample() -> None:
        for pcm in pcm_frames:
            upsample.process(pcm)

    results.append(
        ("resampler 8 -> 16 kHz (20 ms frame)", _per_op_us(resample, len(pcm_frames), repeat))
    )

    async def session_cost() -> float:
        session = VoiceSession(
            transport=_NullTransport(),
            stt=_NullSTT(),
            tts=None,  # type: ignore[arg-type]
            vad=WebRtcVad(sample_rate=8000),
            agent=lambda ctx, text: "",
            config=Config(session_id="bench"),
        )
        await session.start()

        def feed() -> None:
            for pcm in pcm_frames:
                session.process_audio(pcm)

        cost = _per_op_us(feed, len(pcm_frames), repeat)
        await session.stop()
        return cost

    results.append(("session.process_audio (real call audio)", asyncio.run(session_cost())))
    return results


def _payloads(media: list[str]) -> list[bytes]:
    import base64

    return [base64.b64decode(json.loads(line)["media"]["payload"]) for line in media]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)
    if not args.fixture.is_file():
        print(f"fixture not found: {args.fixture}", file=sys.stderr)
        return 2
    rows = run(args.repeat, args.fixture)
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  µs/frame (median of {args.repeat})")
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
