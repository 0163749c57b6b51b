"""What the recogniser has been sent and not yet answered, so a dropped stream loses nothing.

Audio pushed since the last final transcript is kept, with the flushes between it, up to a
size limit. When the stream drops, the session opens a new one and replays the log: the new
stream receives the same audio and the same segment boundaries, and so produces the finals
the session is still waiting for.
"""

from __future__ import annotations

from collections import deque

from session.interfaces import STTStream

_FLUSH = None


class ReplayLog:
    def __init__(self, max_bytes: int) -> None:
        self._entries: deque[bytes | None] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes

    def audio(self, pcm: bytes) -> None:
        if self._max_bytes <= 0:
            return
        self._entries.append(pcm)
        self._bytes += len(pcm)
        while self._bytes > self._max_bytes and self._entries:
            dropped = self._entries.popleft()
            if dropped is not _FLUSH:
                self._bytes -= len(dropped)

    def flush(self) -> None:
        if self._max_bytes > 0:
            self._entries.append(_FLUSH)

    def final_received(self) -> None:
        """A final answers the oldest flush: what came before it is no longer needed."""
        while self._entries:
            entry = self._entries.popleft()
            if entry is _FLUSH:
                return
            self._bytes -= len(entry)

    def replay(self, stream: STTStream) -> int:
        """Sends everything kept to `stream`; returns the bytes of audio replayed."""
        for entry in self._entries:
            if entry is _FLUSH:
                stream.flush()
            else:
                stream.push_audio(entry)
        return self._bytes

    @property
    def pending_bytes(self) -> int:
        return self._bytes
