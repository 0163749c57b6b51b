"""Turn overhead: what the gateway adds to the endpointing delay before the caller hears a reply.

    python -m bench.turn_overhead [--calls N] [--turns K]

N sessions share one event loop, as N calls share a gateway process, and each is fed one real
phrase (eSpeak, 8 kHz) turn after turn in real time, a 20 ms frame per slot by the clock,
through the real webrtcvad, with the default `Config`, the heuristic turn detector and the
instant providers (scripted STT, tone TTS, instant agent), whose own cost is next to nothing.
Each turn gives two numbers:

- beyond delay: the first reply audio handed to the transport, minus the caller's last voiced
  frame, minus the endpointing delay. What the caller waits for beyond the pause the session
  was told to wait for: any VAD hangover not taken out, timer lateness, committing the turn,
  the agent, sentence splitting, synthesis of the first chunk and resampling.
- commit to audio: from the end-of-turn decision to that first audio, the engine's own work.

Preemptive generation is measured both ways, since with it on the agent has usually answered
before the turn is committed. Playout is not part of it: marks are echoed at once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass

from providers.testing import InstantAgent, ScriptedSTT, ToneTTS
from providers.tts.espeak import ESpeakTTS
from providers.turn.heuristic import HeuristicTurnDetector
from providers.vad.webrtc import WebRtcVad
from session.audio import StreamingResampler, audioop
from session.config import Config
from session.session import SessionEvent, VoiceSession

RATE = 8000
FRAME = 320  # 20 ms at 8 kHz
FRAME_SECONDS = 0.02
SILENCE = b"\0" * FRAME
PHRASE = "how are you today"  # one stretch of voice: no pause long enough to end the speech
PAUSE_FRAMES = 25  # the caller's pause after the reply starts, before the next turn


@dataclass(frozen=True, slots=True)
class Turn:
    spoke_until: float  # when the session got the caller's last voiced frame
    committed: float
    first_audio: float
    delay: float  # the endpointing delay this turn was owed

    @property
    def beyond_delay(self) -> float:
        return self.first_audio - self.spoke_until - self.delay

    @property
    def commit_to_audio(self) -> float:
        return self.first_audio - self.committed


class _Wire:
    """A transport that notes when the first audio of each reply reached it."""

    sample_rate = RATE

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.first_audio: list[float] = []
        self._waiting = False
        self.listener: VoiceSession | None = None

    def arm(self) -> None:
        self._waiting = True

    async def send_audio(self, pcm: bytes) -> None:
        if self._waiting:
            self._waiting = False
            self.first_audio.append(self.loop.time())

    async def mark(self, name: str) -> None:
        assert self.listener is not None
        self.listener.handle_playout(name, True)  # played at once: no playout wait

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


def speech_frames(pcm: bytes) -> list[bytes]:
    """The phrase in 20 ms frames, ending with its last frame that carries any sound."""
    pcm = pcm + b"\0" * (-len(pcm) % FRAME)
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]
    while frames and audioop.rms(frames[-1], 2) == 0:
        frames.pop()
    return frames


async def _call(speech: list[bytes], turns: int, preemptive: bool, start_in: float) -> list[Turn]:
    loop = asyncio.get_running_loop()
    wire = _Wire(loop)
    committed: list[float] = []

    def on_event(event: SessionEvent) -> None:
        if event.kind == "user_turn":
            committed.append(loop.time())
            wire.arm()

    config = Config(preemptive_generation=preemptive)
    detector = HeuristicTurnDetector()
    delay = detector.endpointing_delay(
        PHRASE, config.min_endpointing_delay, config.max_endpointing_delay
    )
    session = VoiceSession(
        transport=wire,
        stt=ScriptedSTT(PHRASE),
        tts=ToneTTS(),
        vad=WebRtcVad(sample_rate=RATE),
        agent=InstantAgent(),
        turn_detector=detector,
        config=config,
        on_event=on_event,
    )
    wire.listener = session
    await asyncio.sleep(start_in)
    await session.start()
    t0 = loop.time()
    k = 0

    async def send(frame: bytes) -> None:
        nonlocal k
        await asyncio.sleep(max(0.0, t0 + k * FRAME_SECONDS - loop.time()))
        session.process_audio(frame)
        k += 1

    results: list[Turn] = []
    for _ in range(turns):
        for frame in speech:
            await send(frame)
        spoke_until = loop.time()
        replies = len(wire.first_audio)
        while len(wire.first_audio) == replies:
            await send(SILENCE)
        results.append(Turn(spoke_until, committed[-1], wire.first_audio[-1], delay))
        for _ in range(PAUSE_FRAMES):
            await send(SILENCE)
    await session.stop()
    return results


async def measure(calls: int, turns: int, preemptive: bool, speech: list[bytes]) -> list[Turn]:
    """`calls` sessions at once, started a little apart so their frames do not all coincide."""
    spread = FRAME_SECONDS * 0.618
    results = await asyncio.gather(
        *(_call(speech, turns, preemptive, i * (0.1 + spread)) for i in range(calls))
    )
    return [turn for call in results for turn in call]


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="sessions at once (default 10)")
    parser.add_argument("--turns", type=int, default=5, help="turns per session (default 5)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.turns < 1:
        parser.error("--calls and --turns must be at least 1")
    tts = ESpeakTTS()
    speech = speech_frames(
        StreamingResampler(tts.sample_rate, RATE).process(tts.synthesize_blocking(PHRASE))
    )
    config = Config()
    print(
        f"{args.calls} calls x {args.turns} turns, endpointing delay "
        f"{config.min_endpointing_delay * 1000:.0f} ms (the default, for a finished sentence)"
    )
    print(f"{'preemptive':<11} {'turns':>5}   {'beyond delay ms':^26}   {'commit to audio ms':^26}")
    print(f"{'':<11} {'':>5}   {'p50':>8} {'p95':>8} {'max':>8}   {'p50':>8} {'p95':>8} {'max':>8}")
    for preemptive in (False, True):
        turns = asyncio.run(measure(args.calls, args.turns, preemptive, speech))
        beyond = [t.beyond_delay * 1000 for t in turns]
        engine = [t.commit_to_audio * 1000 for t in turns]
        print(
            f"{preemptive!s:<11} {len(turns):>5}   "
            f"{statistics.median(beyond):>8.2f} {_p95(beyond):>8.2f} {max(beyond):>8.2f}   "
            f"{statistics.median(engine):>8.2f} {_p95(engine):>8.2f} {max(engine):>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
