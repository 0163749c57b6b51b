"""Media-path benchmark: what one 20 ms frame costs the gateway, in microseconds.

    python -m bench.media_path [--repeat N]

Inbound: a recorded Twilio text frame -> parsed and checked -> μ-law decoded -> VAD.
Outbound: 20 ms of PCM -> μ-law -> base64 -> JSON media message.
Session: the same inbound frame pushed through `VoiceSession.process_audio` (VAD, speech
tracking, pre-roll), on silence and on speech. Frames come from the real recorded call in
the shared fixtures, so the VAD sees real phone audio.

As served: what the gateway runs per frame above the event loop's socket read and write.
Inbound, the masked websocket frame's bytes -> `MediaWebSocketProtocol.data_received` (frame
header, unmask, UTF-8) -> the endpoint's `DirectFeed` -> `TwilioTransport.feed` -> the session
(`uvicorn`'s `websockets-sansio` shown beside it for the websocket layer alone; it also costs an
ASGI queue and a task switch per message, not counted here). Outbound, `send_audio` of 20 ms
through the endpoint's ASGI socket to the frame bytes handed to the socket.
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

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from gateway.asgi_websocket import DIRECT_RECEIVE, MediaWebSocketProtocol
from gateway.media_socket import AsgiTextSocket, DirectFeed
from providers.vad.webrtc import WebRtcVad
from session.audio import StreamingResampler
from session.config import Config
from session.session import VoiceSession
from telephony.g711 import pcm_to_ulaw, ulaw_to_pcm
from telephony.twilio.connection import MediaStreamConnection
from telephony.twilio.messages import encode_media
from telephony.twilio.transport import TwilioTransport

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
    results.extend(asyncio.run(_served(head, media, pcm_frames, repeat)))
    return results


class _NullSocketTransport:
    """Enough of an asyncio transport for a websocket protocol that is never really connected."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


async def _open_protocol(
    protocol_class: type[WebSocketsSansIOProtocol], app: Callable[..., object]
) -> tuple[WebSocketsSansIOProtocol, _NullSocketTransport]:
    """A server-side protocol past its handshake, over a transport that goes nowhere."""
    config = uvicorn.Config(app, ws=protocol_class, lifespan="off", log_config=None)
    config.load()
    protocol = protocol_class(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = _NullSocketTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    client = ClientProtocol(parse_uri("ws://gateway.example/twilio/stream"))
    client.send_request(client.connect())
    protocol.data_received(b"".join(client.data_to_send()))
    for _ in range(100):
        if protocol.handshake_complete:
            break
        await asyncio.sleep(0)
    assert protocol.handshake_complete
    return protocol, transport


async def _served(
    head: list[str], media: list[str], pcm_frames: list[bytes], repeat: int
) -> list[tuple[str, float]]:
    frames = [
        Frame(Opcode.TEXT, line.encode()).serialize(mask=True, extensions=[]) for line in media
    ]
    results: list[tuple[str, float]] = []
    finished = asyncio.Event()  # the benches' connections end when it is set

    # The websocket layer alone: frame bytes in, the message's text out.
    class NullReceiver:
        def on_message(self, data: str | bytes) -> None: ...

        def on_disconnect(self, code: int) -> None: ...

    async def attach_app(scope: dict, receive: Callable, send: Callable) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        scope["extensions"][DIRECT_RECEIVE](NullReceiver())
        await finished.wait()

    fast, _ = await _open_protocol(MediaWebSocketProtocol, attach_app)

    def fast_frames() -> None:
        for frame in frames:
            fast.data_received(frame)

    cost = _per_op_us(fast_frames, len(frames), repeat)
    results.append(("websocket frame -> text (MediaWebSocketProtocol)", cost))

    async def asgi_app(scope: dict, receive: Callable, send: Callable) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await finished.wait()

    sansio, _ = await _open_protocol(WebSocketsSansIOProtocol, asgi_app)

    def sansio_frames() -> None:
        for frame in frames:
            sansio.data_received(frame)
        while not sansio.queue.empty():
            sansio.queue.get_nowait()

    cost = _per_op_us(sansio_frames, len(frames), repeat)
    results.append(("  vs uvicorn websockets-sansio (+ queue put)", cost))

    # The whole inbound path: websocket frame -> transport -> session.
    sockets: list[AsgiTextSocket] = []
    feeds: list[DirectFeed] = []
    session = VoiceSession(
        transport=_NullTransport(),
        stt=_NullSTT(),
        tts=None,  # type: ignore[arg-type]
        vad=WebRtcVad(sample_rate=8000),
        agent=lambda ctx, text: "",
        config=Config(session_id="bench"),
    )
    await session.start()

    async def endpoint_app(scope: dict, receive: Callable, send: Callable) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        socket = AsgiTextSocket(send)
        transport = TwilioTransport(socket)
        for line in head:
            transport.feed(line)
        transport.listener = session
        feed = DirectFeed(None, transport, session)  # type: ignore[arg-type]
        sockets.append(socket)
        feeds.append(feed)
        scope["extensions"][DIRECT_RECEIVE](feed)
        await finished.wait()

    served, wire = await _open_protocol(MediaWebSocketProtocol, endpoint_app)

    def served_frames() -> None:
        for frame in frames:
            served.data_received(frame)

    cost = _per_op_us(served_frames, len(frames), repeat)
    results.append(("inbound frame as served (ws frame -> session)", cost))
    assert not feeds[0].done.done(), "the bench stream ended early"

    # Outbound as served: 20 ms of PCM -> μ-law, base64, JSON -> websocket frame bytes.
    transport = TwilioTransport(sockets[0])
    for line in head:
        transport.feed(line)

    async def send_all() -> None:
        for pcm in pcm_frames:
            await transport.send_audio(pcm)

    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await send_all()
        samples.append((time.perf_counter() - start) / len(pcm_frames) * 1e6)
    assert wire.written > 0
    results.append(("outbound 20 ms frame as served (-> ws frame)", statistics.median(samples)))
    await session.stop()
    finished.set()
    for protocol in (fast, sansio, served):
        for _ in range(3):  # let the app return before the connection goes
            await asyncio.sleep(0)
        protocol.connection_lost(None)
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
