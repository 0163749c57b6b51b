"""Turn overhead: from the end-of-turn decision to the first reply audio on the wire.

    python -m bench.turn_overhead [--turns N]

The session runs with the instant providers (scripted STT, tone TTS, instant agent) and the
real webrtcvad on real speech (one eSpeak phrase at 8 kHz), so what is measured is the
engine's own work: committing the turn, running the agent, splitting, synthesising the first
chunk, resampling and handing it to the transport. Preemptive generation is measured both
ways, since with it on the agent has usually answered before the turn is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from providers.testing import InstantAgent, ScriptedSTT, ToneTTS
from providers.tts.espeak import ESpeakTTS
from providers.vad.webrtc import WebRtcVad
from session.audio import StreamingResampler
from session.config import Config
from session.session import SessionEvent, VoiceSession

FRAME = 320  # 20 ms at 8 kHz


class _Wire:
    """A transport that notes when the first audio of each reply reached it."""

    sample_rate = 8000

    def __init__(self) -> None:
        self.first_audio: list[float] = []
        self._waiting = False
        self.listener: VoiceSession | None = None

    def arm(self) -> None:
        self._waiting = True

    async def send_audio(self, pcm: bytes) -> None:
        if self._waiting:
            self._waiting = False
            self.first_audio.append(time.perf_counter())

    async def mark(self, name: str) -> None:
        assert self.listener is not None
        self.listener.handle_playout(name, True)  # played at once: no playout wait

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


async def measure(turns: int, preemptive: bool, speech: bytes) -> list[float]:
    wire = _Wire()
    committed: list[float] = []

    def on_event(event: SessionEvent) -> None:
        if event.kind == "user_turn":
            committed.append(time.perf_counter())
            wire.arm()

    session = VoiceSession(
        transport=wire,
        stt=ScriptedSTT(),
        tts=ToneTTS(),
        vad=WebRtcVad(sample_rate=8000),
        agent=InstantAgent(),
        config=Config(
            min_endpointing_delay=0.05,
            speech_end_silence=0.05,
            preemptive_generation=preemptive,
        ),
        on_event=on_event,
    )
    wire.listener = session
    await session.start()
    silence = b"\0" * FRAME
    for _ in range(turns):
        expected = len(committed) + 1
        for i in range(0, len(speech) - FRAME + 1, FRAME):
            session.process_audio(speech[i : i + FRAME])
        while len(committed) < expected or len(wire.first_audio) < expected:
            session.process_audio(silence)
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
    await session.stop()
    return [(a - c) * 1000 for c, a in zip(committed, wire.first_audio, strict=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    args = parser.parse_args(argv)
    tts = ESpeakTTS()
    speech = StreamingResampler(tts.sample_rate, 8000).process(
        tts.synthesize_blocking("hello, how are you today")
    )
    print(f"{'preemptive':<11} {'turns':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for preemptive in (False, True):
        samples = asyncio.run(measure(args.turns, preemptive, speech))
        p95 = statistics.quantiles(samples, n=20)[-1] if len(samples) > 1 else samples[0]
        print(
            f"{preemptive!s:<11} {len(samples):>5} {statistics.median(samples):>8.3f} "
            f"{p95:>8.3f} {max(samples):>8.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
