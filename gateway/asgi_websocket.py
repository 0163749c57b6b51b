"""uvicorn's websocket protocol with a cheap path for the media stream's text frames.

Twilio sends 50 small text frames a second on every call, so per message the websocket layer
is most of what a call costs the gateway. uvicorn's `websockets-sansio` protocol (the cheapest
of its three, measured) still spends, per frame: `websockets`' generator-based frame parser, an
ASGI queue put and get, a task switch into the app, and a pause and a resume of the socket's
reading. This subclass keeps everything of that protocol (handshake, pings, close handshake,
keep-alive, shutdown) and changes two things:

- A complete, masked, unfragmented text frame is parsed here, in a few integer operations,
  without going through `websockets`' parser. Every other frame (control frames, binary,
  fragments, anything malformed or too big) is handed to `websockets`, always as one whole
  frame, so its parser stays on a frame boundary and keeps every rule it enforces.
- The ASGI scope offers the `DIRECT_RECEIVE` extension: a callable with which the app hands
  over a `DirectReceiver`. From then on each message is given to the receiver straight from
  `data_received`, with no queue, no task switch and no await, and the disconnect reaches it
  the same way. An app that never attaches one sees plain ASGI messages.

Which frames take which path changes nothing the peer can observe: the same frames are
accepted, and the same ones refused with the same close codes.
"""

from __future__ import annotations

from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import OPEN

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension is in every wheel
    from websockets.utils import apply_mask

__all__ = ["DIRECT_RECEIVE", "DirectReceiver", "MediaWebSocketProtocol"]

# ASGI scope extension: `scope["extensions"][DIRECT_RECEIVE](receiver)` attaches a receiver.
DIRECT_RECEIVE = "voice_gateway.direct_receive"

_TEXT_FIN = 0x81  # FIN set, no RSV bits, opcode 1 (text)
_MASKED = 0x80
_OPCODE = 0x0F
_FIN = 0x80
_CONTINUATION = 0x0
_TEXT = 0x1
_BINARY = 0x2
# A frame still arriving is collected here up to this size; a larger one goes to `websockets`,
# whose reader appends chunks without copying what it already holds.
_MAX_TAIL = 1 << 16


class DirectReceiver(Protocol):
    """Takes a connection's messages as they are parsed, inside `data_received`.

    Both methods run inside the event loop's I/O callback: they must not block, and must not
    raise (an exception there would be the protocol's, not the app's).
    """

    def on_message(self, data: str | bytes) -> None: ...

    def on_disconnect(self, code: int) -> None: ...


class _ToReceiver:
    """Stands in for the protocol's ASGI queue once a receiver is attached.

    uvicorn's protocol puts every disconnect it notices (close frame, lost connection, server
    shutdown, the app's own close) on `self.queue`; routing the queue to the receiver catches
    all of them without repeating any of that logic here.
    """

    __slots__ = ("_receiver",)

    def __init__(self, receiver: DirectReceiver) -> None:
        self._receiver: DirectReceiver | None = receiver

    def put_nowait(self, message: dict[str, Any]) -> None:
        receiver = self._receiver
        if receiver is None:  # detached: the receiver has had its disconnect
            return
        if message["type"] == "websocket.receive":
            text = message.get("text")
            receiver.on_message(text if text is not None else message.get("bytes", b""))
        else:  # websocket.disconnect
            receiver.on_disconnect(message.get("code", 1005))

    def detach(self) -> None:
        self._receiver = None

    def empty(self) -> bool:
        return True

    async def get(self) -> dict[str, Any]:
        raise RuntimeError("this websocket's messages go to its attached receiver")


class MediaWebSocketProtocol(WebSocketsSansIOProtocol):
    """`websockets-sansio` with a fast path for text frames and the `DIRECT_RECEIVE` extension.

    Serve with uvicorn's `ws=MediaWebSocketProtocol` (the class: uvicorn 0.35, the first with
    `websockets-sansio`, takes no import string for `ws`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receiver: DirectReceiver | None = None
        # None until the handshake completes; then True while frames may take the fast path.
        self._fast: bool | None = None
        self._tail = b""  # the start of a frame not yet complete
        self._fragmented = False  # inside a fragmented message (handled by `websockets`)
        self._max_size: int | None = self.config.ws_max_size
        self._chunks_before_open = 0

    # -- handshake

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            self.scope["extensions"][DIRECT_RECEIVE] = self.attach

    def attach(self, receiver: DirectReceiver) -> None:
        """Hands every message from now on to `receiver`, starting with those already queued."""
        queued, direct = self.queue, _ToReceiver(receiver)
        self.queue = direct  # type: ignore[assignment]
        self._receiver = receiver
        while not queued.empty():
            direct.put_nowait(queued.get_nowait())  # type: ignore[arg-type]
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # the receiver gets its disconnect here
        # The receiver (the call's feed, which holds its session) and the extension (a bound
        # method of this protocol, inside the scope this protocol holds) each close a
        # reference cycle. Left in place, a call's objects wait for a full collection, which
        # CPython runs rarely in a large heap: under churn the gateway grew by ~40 KB per
        # ended call. Broken here, the call is freed as soon as its last task ends.
        scope = getattr(self, "scope", None)  # none when the handshake never came
        if scope is not None:
            scope["extensions"].pop(DIRECT_RECEIVE, None)
        if isinstance(self.queue, _ToReceiver):
            self.queue.detach()
        self._receiver = None

    # -- incoming data

    def data_received(self, data: bytes) -> None:
        fast = self._fast
        if not fast:
            if fast is None:
                if not self.handshake_complete:
                    self._chunks_before_open += 1
                    super().data_received(data)
                    return
                fast = self._fast = self._can_go_fast()
            if not fast:
                super().data_received(data)
                return
        if self.close_sent or self.conn.state is not OPEN:
            self._fast = False
            super().data_received(self._tail + data if self._tail else data)
            self._tail = b""
            return
        if self._tail:
            data = self._tail + data
            self._tail = b""
        receiver = self._receiver
        max_size = self._max_size
        end = len(data)
        pos = 0
        queued = False
        slow = False
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                start += 2
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
            if not second & _MASKED or (max_size is not None and length > max_size):
                # `websockets` refuses this header at once (1002 unmasked, 1009 too big).
                slow = True
                break
            stop = start + 4 + length
            if stop > end:
                # Incomplete: keep it for the next chunk, unless it is big enough that
                # collecting it here would copy it over and over.
                slow = length > _MAX_TAIL
                break
            if first == _TEXT_FIN and not self._fragmented:
                try:
                    text = apply_mask(data[start + 4 : stop], data[start : start + 4]).decode()
                except UnicodeDecodeError:
                    slow = True  # `websockets` closes with 1007
                    break
                if receiver is not None:
                    receiver.on_message(text)
                else:
                    self.queue.put_nowait({"type": "websocket.receive", "text": text})
                    queued = True
            else:
                self._track_fragments(first)
                # One whole frame: `websockets`' parser ends on a frame boundary again.
                super().data_received(data[pos:stop])
            pos = stop
            if self.close_sent or self.conn.state is not OPEN:
                slow = True
                break
        if slow:
            # `websockets` takes the stream from `pos` on, for the rest of the connection.
            self._fast = False
            if pos < end:
                super().data_received(data[pos:])
        elif pos < end:
            self._tail = data[pos:]
        if queued and not self.read_paused:
            # As uvicorn does: the app reads what is queued before the socket is read again.
            self.read_paused = True
            self.transport.pause_reading()

    def send_receive_event_to_app(self) -> None:
        # A message that came through `websockets` (binary, compressed or reassembled from
        # fragments). With a receiver attached, `self.queue` delivers it at once; the pause
        # uvicorn then puts on reading, waiting for an ASGI `receive()`, is undone.
        was_paused = self.read_paused
        super().send_receive_event_to_app()
        if self._receiver is not None and self.read_paused and not was_paused:
            self.read_paused = False
            self.transport.resume_reading()

    # -- internals

    def _can_go_fast(self) -> bool:
        # The request must have come in one chunk and nothing after it before our 101 (uvicorn
        # hands over the request exactly that way): then `websockets`' parser holds no bytes
        # and sits at the start of a frame. Otherwise this connection keeps the plain path.
        return (
            self._chunks_before_open == 1
            and self.initial_response is None
            and not self.close_sent
            and self.conn.state is OPEN
            and not self.conn.reader.buffer
        )

    def _track_fragments(self, first: int) -> None:
        opcode = first & _OPCODE
        if opcode in (_TEXT, _BINARY):
            self._fragmented = not first & _FIN
        elif opcode == _CONTINUATION and first & _FIN:
            self._fragmented = False
