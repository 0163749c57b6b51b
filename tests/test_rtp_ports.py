"""The RTP port range: even ports, skipping ones in use, refusing when exhausted."""

from __future__ import annotations

import asyncio
import socket

import pytest

from telephony.rtp_ports import RtpPortPool, RtpPortsExhausted


def _free_even_range(size: int) -> int:
    """The start of `size` consecutive free UDP ports, even."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            start = probe.getsockname()[1] & ~1
        if start + size > 65535:
            continue
        try:
            holders = []
            for port in range(start, start + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                holders.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in holders:
                sock.close()
    raise RuntimeError("no free port range")


async def test_ports_are_even_skip_busy_ones_and_run_out() -> None:
    start = _free_even_range(6)
    pool = RtpPortPool("127.0.0.1", start - 1 if start > 1024 else start, start + 5)
    assert pool.capacity == 3
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", start + 2))  # another process holds the middle one
    try:
        opened = [await pool.open(asyncio.DatagramProtocol) for _ in range(2)]
        assert [port for _, _, port in opened] == [start, start + 4]
        with pytest.raises(RtpPortsExhausted, match="3 RTP ports"):
            await pool.open(asyncio.DatagramProtocol)
        transport, _, port = opened[0]
        transport.close()
        await asyncio.sleep(0)  # the socket closes on the loop's next pass
        pool.release(port)
        _, _, again = await pool.open(asyncio.DatagramProtocol)
        assert again == start
        assert pool.in_use == {start, start + 4}
    finally:
        busy.close()
        for transport, _, _ in opened:
            transport.close()


def test_a_range_without_an_even_port_is_refused() -> None:
    with pytest.raises(ValueError, match="no even port"):
        RtpPortPool("127.0.0.1", 10001, 10001)
