"""SIPp as the independent SIP peer in the tests, and the pcap files its `uac_pcap` plays.

SIPp's built-in `uac_pcap` scenario plays `pcap/g711a.pcap` (PCMA speech) and then
`pcap/dtmf_2833_1.pcap` (RFC 4733 events) from its working directory. `write_uac_pcap_files`
writes them: speech the test chooses, and the key presses it wants joined from the recordings
Debian's `sip-tester` ships in /usr/share/sip-tester. Both are RTP in Ethernet/IPv4/UDP frames
in a classic libpcap file, which is what SIPp's player reads (it takes the UDP payloads and
their timing and sends them from its own media port).
"""

from __future__ import annotations

import csv
import shutil
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from telephony.g711 import pcm_to_alaw
from telephony.rtp import RtpPacket
from tests.test_rtp import SIPP_PCAPS, read_pcap_rtp

UNEXPECTED = ("FailedUnexpectedMessage(C)", "OutOfCallMsgs(C)", "DeadCallMsgs(C)")


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError("sipp is not installed: `make test` installs it (Debian sip-tester)")
    return path


@dataclass(frozen=True)
class SippRun:
    returncode: int
    stats: dict[str, str]  # the cumulative columns of SIPp's last statistics row
    output: str

    def count(self, column: str) -> int:
        return int(self.stats.get(column, "0") or 0)

    @property
    def unexpected(self) -> int:
        return sum(self.count(column) for column in UNEXPECTED)


def run_sipp(
    scenario: str,
    sip_port: int,
    *,
    cwd: Path,
    calls: int,
    rate: float = 10,
    call_ms: int = 1000,
    local_port: int,
    media_port: int,
    extra: Sequence[str] = (),
    timeout: float = 120,
) -> SippRun:
    """Places `calls` calls with a built-in scenario and waits for them to finish."""
    stats_file = cwd / f"{scenario}-stats.csv"
    command = [
        sipp_binary(),
        "-sn",
        scenario,
        f"127.0.0.1:{sip_port}",
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-d",
        str(call_ms),
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-mp",
        str(media_port),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stats_file),
        "-fd",
        "1",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        *extra,
    ]
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout + 30, check=False
    )
    rows = list(csv.reader(stats_file.open(), delimiter=";")) if stats_file.exists() else []
    stats = {}
    if len(rows) >= 2:
        stats = {k: v for k, v in zip(rows[0], rows[-1], strict=False) if k.endswith("(C)")}
    return SippRun(result.returncode, stats, result.stdout[-3000:] + result.stderr[-3000:])


# -- pcap -------------------------------------------------------------------------------------

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET


def _frame(payload: bytes, src_port: int, dst_port: int) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,  # UDP
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    ethernet = b"\x00" * 12 + b"\x08\x00"  # IPv4
    return ethernet + ip + udp


def write_pcap(path: Path, packets: Iterable[tuple[float, bytes]]) -> None:
    """A libpcap file of RTP datagrams, each sent `t` seconds from the start."""
    with path.open("wb") as out:
        out.write(_PCAP_HEADER)
        for t, data in packets:
            frame = _frame(data, 6000, 6000)
            seconds, micros = int(t), round((t - int(t)) * 1e6)
            out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            out.write(frame)


def pcma_capture(pcm_8k: bytes, ptime_ms: int = 30) -> list[tuple[float, bytes]]:
    """16-bit PCM at 8 kHz as PCMA RTP, one packet per `ptime_ms`, as a phone sends it."""
    step = 8 * ptime_ms * 2  # bytes of PCM per packet
    packets = []
    for n, offset in enumerate(range(0, len(pcm_8k), step)):
        packet = RtpPacket(
            marker=n == 0,
            payload_type=8,  # PCMA, as uac_pcap offers it
            sequence=1000 + n,
            timestamp=160_000 + n * step // 2,
            ssrc=0x5151,
            payload=pcm_to_alaw(pcm_8k[offset : offset + step].ljust(step, b"\x00")),
        )
        packets.append((n * ptime_ms / 1000, packet.serialize()))
    return packets


def write_uac_pcap_files(cwd: Path, speech_pcm_8k: bytes, digits: Sequence[str]) -> None:
    """`cwd/pcap/` as `sipp -sn uac_pcap` wants it.

    `g711a.pcap` carries `speech_pcm_8k` as PCMA in 30 ms packets, like SIPp's own recording.
    `dtmf_2833_1.pcap` is made of SIPp's recorded key presses (`dtmf_2833_<key>.pcap` from the
    package) for `digits`, one after the other, 100 ms apart.
    """
    folder = cwd / "pcap"
    folder.mkdir(exist_ok=True)
    write_pcap(folder / "g711a.pcap", pcma_capture(speech_pcm_8k))
    packets: list[tuple[float, bytes]] = []
    start = 0.0
    for digit in digits:
        name = {"#": "pound", "*": "star"}.get(digit, digit)
        recorded = read_pcap_rtp(SIPP_PCAPS / f"dtmf_2833_{name}.pcap")
        first = recorded[0][0]
        packets += [(start + t - first, data) for t, data in recorded]
        start = packets[-1][0] + 0.1
    write_pcap(folder / "dtmf_2833_1.pcap", packets)
