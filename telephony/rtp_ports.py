"""The RTP port range: one even UDP port per call leg, bound when the call is answered.

RTP takes even ports and leaves the odd one above for RTCP (RFC 3550 section 11). We do not
send RTCP, but peers that do send it to port+1, so that port is skipped too rather than handed
to the next call. A port some other process holds is skipped; the search starts after the port
handed out last, so a port just released is not reused at once (late packets of the old call
would land in the new one).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RtpPortPool", "RtpPortsExhausted"]

P = TypeVar("P", bound=asyncio.DatagramProtocol)


class RtpPortsExhausted(RuntimeError):
    """Every even port in the range is taken: the call is refused (503)."""


class RtpPortPool:
    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        first = port_min + (port_min % 2)
        if first > port_max:
            raise ValueError(f"RTP port range {port_min}..{port_max} holds no even port")
        self.host = host
        self._ports = range(first, port_max + 1, 2)
        self._next = 0
        self.in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._ports)

    async def open(
        self, protocol_factory: Callable[[], P]
    ) -> tuple[asyncio.DatagramTransport, P, int]:
        """Binds the next free even port; raises `RtpPortsExhausted` when none is left."""
        loop = asyncio.get_running_loop()
        for _ in range(len(self._ports)):
            port = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            if port in self.in_use:
                continue
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    protocol_factory, local_addr=(self.host, port)
                )
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue  # another process has it
                raise
            self.in_use.add(port)
            return transport, protocol, port
        raise RtpPortsExhausted(
            f"all {len(self._ports)} RTP ports in {self._ports.start}..{self._ports.stop - 1} "
            "are in use"
        )

    def release(self, port: int) -> None:
        self.in_use.discard(port)
