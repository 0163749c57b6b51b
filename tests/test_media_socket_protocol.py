"""`MediaWebSocketProtocol` over real TCP: every frame the fast path takes or leaves.

A tiny ASGI app echoes what it gets, either through ASGI `receive()` or through a receiver
attached with the `DIRECT_RECEIVE` extension; the client writes raw frame bytes, split however
a test likes, so the paths between the protocol's own parser and `websockets`' are all crossed.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from gateway.asgi_websocket import DIRECT_RECEIVE, MediaWebSocketProtocol
from gateway.workers import FULL_COLLECTION_EVERY, SERVER_OPTIONS, tune_gc

MAX_SIZE = 200_000
MODES = ["asgi", "direct"]


@dataclass
class Seen:
    """What the app saw on its connections, by path."""

    messages: dict[str, list[str | bytes]] = field(default_factory=dict)
    disconnects: dict[str, int] = field(default_factory=dict)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any, seen: Seen) -> None:
    """Echoes each message back; on `/direct...` through an attached receiver.

    The receiver is attached after the first message, as the media endpoint does after
    `start`; `/direct-late` waits a little first, so messages queue before it is attached.
    """
    assert scope["type"] == "websocket"
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    if "slow" in path:
        await asyncio.sleep(0.2)  # bytes from an impatient client arrive before the 101
    await send({"type": "websocket.accept"})
    got = seen.messages.setdefault(path, [])
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    class Receiver:
        def on_message(self, data: str | bytes) -> None:
            key = "text" if isinstance(data, str) else "bytes"
            inbox.put_nowait({"type": "websocket.receive", key: data})

        def on_disconnect(self, code: int) -> None:
            inbox.put_nowait({"type": "websocket.disconnect", "code": code})

    direct = path.startswith("/direct")
    first = True
    closed = False
    while True:
        message = await (inbox.get() if direct and not first else receive())
        if message["type"] == "websocket.disconnect":
            seen.disconnects[path] = message["code"]
            return
        data = message.get("text")
        data = data if data is not None else message["bytes"]
        got.append(data)
        if closed:
            continue  # queued before the close: still read, but no more sending
        if data == "close me":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
            closed = True
            continue
        key = "text" if isinstance(data, str) else "bytes"
        try:
            await send({"type": "websocket.send", key: data})
        except (RuntimeError, OSError):  # the protocol closed the connection meanwhile
            return
        if direct and first:
            first = False
            if path == "/direct-late":
                await asyncio.sleep(0.2)
            scope["extensions"][DIRECT_RECEIVE](Receiver())


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Seen]]:
    seen = Seen()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await echo_app(scope, receive, send, seen)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        ws=MediaWebSocketProtocol,
        ws_max_size=MAX_SIZE,
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield port, seen
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class Client:
    """A websocket client that writes raw bytes and reads frames with `websockets`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol: ClientProtocol
        self.pending: list[Frame] = []  # frames read along with the handshake answer

    @classmethod
    async def open(
        cls, port: int, path: str, *, early: bytes = b"", deflate: bool = False
    ) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.protocol = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{port}{path}"),
            extensions=[ClientPerMessageDeflateFactory()] if deflate else None,
        )
        client.protocol.send_request(client.protocol.connect())
        writer.write(b"".join(client.protocol.data_to_send()))
        if early:
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(early)
        while True:
            client.protocol.receive_data(await asyncio.wait_for(reader.read(65536), 5))
            events = client.protocol.events_received()
            client.pending += [event for event in events if isinstance(event, Frame)]
            if any(isinstance(event, Response) for event in events):
                assert client.protocol.handshake_exc is None
                return client

    async def write(self, data: bytes, chunk: int | None = None) -> None:
        """Writes `data`, `chunk` bytes at a time; stops quietly if the server hung up."""
        step = chunk or len(data) or 1
        for offset in range(0, len(data), step):
            if self.writer.is_closing():
                return
            self.writer.write(data[offset : offset + step])
            try:
                await self.writer.drain()
            except ConnectionError:
                return
            if chunk is not None:
                await asyncio.sleep(0)

    async def frames(self, count: int) -> list[Frame]:
        frames, self.pending = self.pending, []
        while len(frames) < count:
            for event in self.protocol.events_received():
                if isinstance(event, Frame):
                    frames.append(event)
            if len(frames) >= count:
                break
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            assert data or frames, "connection closed"
        return frames

    async def close_code(self) -> int:
        while True:
            for frame in await self.frames(1):
                if frame.opcode is Opcode.CLOSE:
                    return Close.parse(frame.data).code

    async def replies(self, count: int) -> list[str | bytes]:
        """The next `count` data messages; other frames stay for `frames` and `close_code`."""
        out: list[str | bytes] = []
        while len(out) < count:
            frames = await self.frames(1)
            for index, frame in enumerate(frames):
                if len(out) == count or frame.opcode not in (Opcode.TEXT, Opcode.BINARY):
                    self.pending = frames[index:] + self.pending
                    break
                data = bytes(frame.data)
                out.append(data.decode() if frame.opcode is Opcode.TEXT else data)
        return out

    def close(self) -> None:
        self.writer.close()


def text(payload: str | bytes, *, fin: bool = True, opcode: Opcode = Opcode.TEXT) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def frame(opcode: Opcode, data: bytes = b"", *, fin: bool = True, mask: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=mask, extensions=[])


# ------------------------------------------------------------------------------- the paths


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk", [None, 1, 7, 131])
async def test_text_frames_arrive_whole_and_in_order_however_the_bytes_are_split(
    server: tuple[int, Seen], mode: str, chunk: int | None
) -> None:
    port, seen = server
    # Short (7-bit), medium (16-bit) and long (64-bit) lengths, and multi-byte UTF-8.
    messages = ["first", "é" * 100, "x" * 300, "€ 42 ✓", "y" * 70_000, "last"]
    client = await Client.open(port, f"/{mode}")
    await client.write(b"".join(text(m) for m in messages), chunk)
    assert await client.replies(len(messages)) == messages
    assert seen.messages[f"/{mode}"] == messages
    client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_fragments_binary_and_pings_go_through_websockets_between_fast_frames(
    server: tuple[int, Seen], mode: str
) -> None:
    port, seen = server
    client = await Client.open(port, f"/{mode}")
    stream = (
        text("one")
        + text("fragmented ", fin=False)
        + frame(Opcode.PING, b"p1")  # control frames may come between fragments
        + text("message", fin=True, opcode=Opcode.CONT)
        + frame(Opcode.BINARY, b"\x00\x01\xff")
        + text("two")
    )
    await client.write(stream, chunk=5)
    frames = await client.frames(5)
    pongs = [f for f in frames if f.opcode is Opcode.PONG]
    assert [bytes(f.data) for f in pongs] == [b"p1"]
    replies = [bytes(f.data) for f in frames if f.opcode is not Opcode.PONG]
    assert replies == [b"one", b"fragmented message", b"\x00\x01\xff", b"two"]
    assert seen.messages[f"/{mode}"] == ["one", "fragmented message", b"\x00\x01\xff", "two"]
    client.close()


async def test_plain_text_frames_never_reach_the_websockets_parser(
    server: tuple[int, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = server
    chunks: list[int] = []
    original = WebSocketsSansIOProtocol.data_received

    def spy(self: WebSocketsSansIOProtocol, data: bytes) -> None:
        chunks.append(len(data))
        original(self, data)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "data_received", spy)
    client = await Client.open(port, "/direct")
    assert len(chunks) == 1  # the handshake request
    messages = [f"media {i}" for i in range(50)]
    await client.write(b"".join(text(m) for m in messages), chunk=33)
    assert await client.replies(50) == messages
    assert len(chunks) == 1
    await client.write(frame(Opcode.PING, b"p"))
    await client.frames(1)
    assert chunks[1:] == [len(frame(Opcode.PING, b"p"))]  # a control frame, whole
    client.close()


async def test_messages_queued_before_the_receiver_is_attached_reach_it_in_order(
    server: tuple[int, Seen],
) -> None:
    port, seen = server
    client = await Client.open(port, "/direct-late")
    messages = [f"m{i}" for i in range(20)]
    await client.write(b"".join(text(m) for m in messages))
    await asyncio.sleep(0.05)  # all sent while the app still waits to attach
    await client.write(text("after"))
    assert await client.replies(21) == [*messages, "after"]
    assert seen.messages["/direct-late"] == [*messages, "after"]
    client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_close_from_the_peer_is_answered_and_reaches_the_app(
    server: tuple[int, Seen], mode: str
) -> None:
    port, seen = server
    client = await Client.open(port, f"/{mode}")
    await client.write(text("hi"))
    assert await client.replies(1) == ["hi"]
    await client.write(frame(Opcode.CLOSE, Close(1000, "bye").serialize()))
    assert await client.close_code() == 1000
    for _ in range(100):
        if f"/{mode}" in seen.disconnects:
            break
        await asyncio.sleep(0.01)
    assert seen.disconnects[f"/{mode}"] == 1000
    client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_close_from_the_app_reaches_the_peer(server: tuple[int, Seen], mode: str) -> None:
    port, seen = server
    client = await Client.open(port, f"/{mode}")
    await client.write(text("hi") + text("close me") + text("queued before the close"))
    assert await client.replies(1) == ["hi"]
    assert await client.close_code() == 4000
    await client.write(text("sent after the close"))
    await asyncio.sleep(0.1)
    assert seen.messages[f"/{mode}"] == ["hi", "close me", "queued before the close"]
    client.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(Opcode.TEXT, b"not masked", mask=False), 1002),
        (text(b"\xff\xfe not UTF-8"), 1007),
        # Only the header: the server hangs up before a big frame's payload could be sent.
        (text("z" * (MAX_SIZE + 1))[:14], 1009),
        (text("a continuation without a start", opcode=Opcode.CONT), 1002),
    ],
    ids=["unmasked", "invalid-utf8", "too-big", "stray-continuation"],
)
async def test_bad_frames_are_refused_with_the_close_code_websockets_uses(
    server: tuple[int, Seen], mode: str, bad: bytes, code: int
) -> None:
    port, seen = server
    client = await Client.open(port, f"/{mode}")
    await client.write(text("ok") + bad + text("never delivered"), chunk=1000)
    assert await client.close_code() == code
    assert "never delivered" not in seen.messages[f"/{mode}"]
    client.close()


async def test_a_text_frame_inside_a_fragmented_message_is_refused(
    server: tuple[int, Seen],
) -> None:
    port, _ = server
    client = await Client.open(port, "/direct")
    await client.write(text("ok") + text("start", fin=False) + text("not a continuation"))
    assert await client.close_code() == 1002
    client.close()


async def test_bytes_sent_before_the_handshake_answer_are_still_read(
    server: tuple[int, Seen],
) -> None:
    # A client may not do this, but if one does the frame must not be lost or misparsed.
    port, _ = server
    client = await Client.open(port, "/direct-slow", early=text("early"))
    await client.write(text("then"))
    assert await client.replies(2) == ["early", "then"]
    client.close()


@pytest.mark.parametrize("mode", MODES)
async def test_compressed_frames_go_through_websockets(server: tuple[int, Seen], mode: str) -> None:
    # uvicorn accepts permessage-deflate by default (serve declines it); compressed frames
    # carry RSV1 and must be left to `websockets`.
    port, seen = server
    client = await Client.open(port, f"/{mode}", deflate=True)
    assert client.protocol.extensions, "permessage-deflate was not negotiated"
    messages = ["squeeze " * 40, "me", "too " * 100]
    for message in messages:
        client.protocol.send_text(message.encode())
    client.protocol.send_frame(Frame(Opcode.TEXT, b"plain"))  # uncompressed is allowed too
    await client.write(b"".join(client.protocol.data_to_send()), chunk=50)
    assert await client.replies(4) == [*messages, "plain"]
    assert seen.messages[f"/{mode}"] == [*messages, "plain"]
    client.close()


def test_serve_runs_this_protocol_on_uvloop_and_httptools() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None: ...

    assert SERVER_OPTIONS["ws"] is MediaWebSocketProtocol
    assert SERVER_OPTIONS["loop"] == "uvloop"
    assert SERVER_OPTIONS["ws_per_message_deflate"] is False
    config = uvicorn.Config(app, **SERVER_OPTIONS)
    config.load()
    assert config.ws_protocol_class is MediaWebSocketProtocol
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    import uvloop  # noqa: F401 - installed with uvicorn[standard], as is httptools


def test_tune_gc_freezes_the_start_and_makes_full_collections_rare() -> None:
    thresholds = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY
        assert gc.get_threshold()[:2] == thresholds[:2]
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
