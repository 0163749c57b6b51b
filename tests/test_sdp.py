"""SDP parsing and RFC 3264 offer/answer against offers real endpoints send."""

from __future__ import annotations

import pytest

from telephony.sdp import (
    Answer,
    MediaParams,
    SdpError,
    SessionDescription,
    accept_answer,
    answer,
    make_offer,
)

# sipp 3.6's built-in `uac` scenario (`sipp -sd uac`), keywords filled in: PCMU only, no
# telephone-event, no ptime.
SIPP_UAC = """v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

# sipp 3.6's built-in `uac_pcap` scenario (`sipp -sd uac_pcap`): PCMA and telephone-event 101,
# and no a=ptime line even though the g711a.pcap it plays holds 30 ms packets.
SIPP_UAC_PCAP = """v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6002 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-11,16
"""

# Asterisk-style: several codecs in preference order, G.722 first, and a video stream.
ASTERISK = "\r\n".join(
    [
        "v=0",
        "o=- 1697212468 1697212468 IN IP4 10.0.0.5",
        "s=Asterisk",
        "c=IN IP4 10.0.0.5",
        "t=0 0",
        "m=audio 17050 RTP/AVP 9 0 8 101",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:150",
        "a=sendrecv",
        "m=video 17052 RTP/AVP 99 34",
        "a=rtpmap:99 H264/90000",
        "a=fmtp:99 profile-level-id=42801F",
        "a=rtpmap:34 H263/90000",
        "a=sendrecv",
        "",
    ]
)

# FreeSWITCH-style: opus first, PCMA before PCMU, telephone-event on dynamic type 96, 30 ms.
FREESWITCH = "\r\n".join(
    [
        "v=0",
        "o=FreeSWITCH 1697200000 1697200001 IN IP4 192.168.1.20",
        "s=FreeSWITCH",
        "c=IN IP4 192.168.1.20",
        "t=0 0",
        "m=audio 24580 RTP/AVP 102 9 8 0 96 97 13",
        "a=rtpmap:102 opus/48000/2",
        "a=fmtp:102 useinbandfec=1; maxplaybackrate=48000",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:96 telephone-event/8000",
        "a=fmtp:96 0-16",
        "a=rtpmap:97 telephone-event/48000",
        "a=rtpmap:13 CN/8000",
        "a=ptime:30",
        "a=sendrecv",
        "",
    ]
)


def _answer(body: str | SessionDescription, **kwargs: object) -> Answer:
    offer = body if isinstance(body, SessionDescription) else SessionDescription.parse(body)
    options: dict[str, object] = {"local_ip": "192.0.2.10", "rtp_port": 10000, "session_id": 7}
    options.update(kwargs)
    return answer(offer, **options)  # type: ignore[arg-type]


# -- parsing


def test_parses_sipp_uac_pcap_offer() -> None:
    sdp = SessionDescription.parse(SIPP_UAC_PCAP)
    assert sdp.origin.session_id == "53655765"
    assert sdp.connection is not None and sdp.connection.address == "127.0.0.1"
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        6002,
        "RTP/AVP",
        ("8", "101"),
    )
    assert {pt: m.encoding for pt, m in audio.rtpmaps.items()} == {
        8: "PCMA",
        101: "telephone-event",
    }
    assert audio.fmtp == {101: "0-11,16"}
    assert audio.ptime is None
    assert sdp.effective_direction(audio) == "sendrecv"


def test_static_payload_types_need_no_rtpmap() -> None:
    sdp = SessionDescription.parse(SIPP_UAC.replace("a=rtpmap:0 PCMU/8000\n", ""))
    assert sdp.media[0].rtpmaps[0].encoding == "PCMU"


def test_serialise_then_parse_keeps_everything() -> None:
    body = ASTERISK.replace("s=Asterisk\r\n", "s=Asterisk\r\ni=info\r\nb=AS:64\r\n").replace(
        "m=video 17052 RTP/AVP 99 34\r\n",
        "m=video 17052 RTP/AVP 99 34\r\ni=cam\r\nb=TIAS:512000\r\n",
    )
    parsed = SessionDescription.parse(body)
    text = parsed.serialize()
    assert text.endswith("\r\n") and "\n\n" not in text
    assert SessionDescription.parse(text) == parsed
    assert text.index("i=info") < text.index("c=IN") < text.index("b=AS:64") < text.index("t=0")


def test_bytes_and_bare_newlines_are_accepted() -> None:
    assert SessionDescription.parse(SIPP_UAC.encode()) == SessionDescription.parse(
        SIPP_UAC.replace("\n", "\r\n")
    )


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\r\n\r\n",
        "v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n",
        "o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
        "v=0\r\ns=-\r\nc=IN IP4 1.2.3.4\r\n",  # no o=
        "v=0\r\no=- 1 IN IP4 1.2.3.4\r\n",  # o= with 5 fields
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nthis is not sdp\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nab=c\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio port RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio -1 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\ns=late\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
    ],
)
def test_malformed_sdp_raises_sdp_error(body: str) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(body)


def test_non_utf8_body_raises_sdp_error() -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(b"v=0\r\no=\xff\xfe 1 1 IN IP4 1.2.3.4\r\n")


@pytest.mark.parametrize(
    "line",
    [
        "a=rtpmap:abc PCMU/8000",
        "a=rtpmap:200 PCMU/8000",
        "a=rtpmap:0 PCMU",
        "a=rtpmap:0 PCMU/fast",
        "m=audio 4000 RTP/AVP zero",
        "a=ptime:soon",
    ],
)
def test_malformed_media_details_raise_sdp_error_when_answered(line: str) -> None:
    body = SIPP_UAC.replace("a=rtpmap:0 PCMU/8000", line)
    if line.startswith("m="):
        body = body.replace("m=audio 6000 RTP/AVP 0", line)
    with pytest.raises(SdpError):
        _answer(body)


# -- answering


def test_answers_sipp_uac_with_pcmu() -> None:
    result = _answer(SIPP_UAC)
    assert result.media == MediaParams(
        codec="PCMU",
        payload_type=0,
        ptime_ms=20,
        dtmf_payload_type=None,
        remote_addr=("127.0.0.1", 6000),
        direction="sendrecv",
    )
    text = result.sdp.serialize()
    assert "c=IN IP4 192.0.2.10\r\n" in text
    assert "m=audio 10000 RTP/AVP 0\r\n" in text
    assert "a=ptime:20\r\n" in text and "a=sendrecv\r\n" in text
    assert "o=- 7 0 IN IP4 192.0.2.10\r\n" in text


def test_answers_sipp_uac_pcap_with_pcma_and_its_telephone_event() -> None:
    result = _answer(SIPP_UAC_PCAP)
    assert result.media is not None
    assert (result.media.codec, result.media.payload_type) == ("PCMA", 8)
    assert result.media.dtmf_payload_type == 101
    assert result.media.ptime_ms == 20  # the offer states none
    audio = result.sdp.media[0]
    assert audio.formats == ("8", "101")
    assert audio.fmtp == {101: "0-15"}


def test_echoes_ptime_30_from_the_offer() -> None:
    result = _answer(
        SIPP_UAC_PCAP.replace("a=fmtp:101 0-11,16\n", "a=fmtp:101 0-11,16\na=ptime:30\n")
    )
    assert result.media is not None and result.media.ptime_ms == 30
    assert result.sdp.media[0].ptime == 30


@pytest.mark.parametrize("ptime", ["10", "40", "60"])
def test_other_ptimes_fall_back_to_20(ptime: str) -> None:
    result = _answer(SIPP_UAC + f"a=ptime:{ptime}\n")
    assert result.media is not None and result.media.ptime_ms == 20


def test_asterisk_offer_takes_first_supported_codec_and_rejects_video() -> None:
    result = _answer(ASTERISK)
    assert result.media is not None
    assert (result.media.codec, result.media.payload_type, result.media.dtmf_payload_type) == (
        "PCMU",
        0,
        101,
    )
    assert result.media.remote_addr == ("10.0.0.5", 17050)
    audio, video = result.sdp.media
    assert (audio.port, audio.formats) == (10000, ("0", "101"))
    assert (video.media, video.port) == ("video", 0)
    assert video.formats == ("99", "34")
    assert "m=video 0 RTP/AVP 99 34\r\n" in result.sdp.serialize()


def test_freeswitch_offer_keeps_dynamic_telephone_event_and_30ms() -> None:
    result = _answer(FREESWITCH)
    assert result.media is not None
    assert (result.media.codec, result.media.payload_type) == ("PCMA", 8)
    assert result.media.dtmf_payload_type == 96  # the 8 kHz one, not the 48 kHz one
    assert result.media.ptime_ms == 30
    assert result.sdp.media[0].formats == ("8", "96")


def test_supported_list_limits_the_choice() -> None:
    result = _answer(ASTERISK, supported=("PCMA",))
    assert result.media is not None and result.media.codec == "PCMA"


def test_dynamic_payload_type_for_g711_is_kept() -> None:
    body = SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 97 100").replace(
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:97 pcmu/8000\na=rtpmap:100 telephone-event/8000"
    )
    result = _answer(body)
    assert result.media is not None
    assert (result.media.codec, result.media.payload_type, result.media.dtmf_payload_type) == (
        "PCMU",
        97,
        100,
    )
    assert "a=rtpmap:97 pcmu/8000" in result.sdp.serialize()


@pytest.mark.parametrize(
    ("offered", "ours"),
    [
        ("sendrecv", "sendrecv"),
        ("sendonly", "recvonly"),  # the caller puts us on hold
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
    ],
)
def test_direction_is_mirrored(offered: str, ours: str) -> None:
    result = _answer(SIPP_UAC + f"a={offered}\n")
    assert result.media is not None and result.media.direction == ours
    assert result.sdp.media[0].direction == ours


def test_session_level_direction_applies_unless_the_m_line_overrides() -> None:
    held = SIPP_UAC.replace("t=0 0\n", "t=0 0\na=sendonly\n")
    result = _answer(held)
    assert result.media is not None and result.media.direction == "recvonly"
    result = _answer(held + "a=sendrecv\n")
    assert result.media is not None and result.media.direction == "sendrecv"


def test_old_style_hold_with_zero_address() -> None:
    result = _answer(SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert result.media is not None
    assert result.media.direction == "recvonly"
    assert result.media.remote_addr == ("0.0.0.0", 6000)


def test_no_common_codec_rejects_every_m_line() -> None:
    body = SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 18 9").replace(
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000\na=rtpmap:9 G722/8000"
    )
    result = _answer(body)
    assert not result.accepted and result.media is None
    assert [(m.media, m.port, m.formats) for m in result.sdp.media] == [("audio", 0, ("18", "9"))]


def test_g711_at_another_clock_rate_is_not_g711() -> None:
    body = SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 96").replace(
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:96 PCMU/16000"
    )
    assert _answer(body).media is None


def test_srtp_audio_is_rejected_and_a_plain_second_stream_taken() -> None:
    body = SIPP_UAC.replace(
        "m=audio 6000 RTP/AVP 0\n",
        "m=audio 6000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\n"
        "m=audio 6002 RTP/AVP 0\n",
    )
    result = _answer(body)
    assert [m.port for m in result.sdp.media] == [0, 10000]
    assert result.media is not None and result.media.remote_addr == ("127.0.0.1", 6002)


def test_only_the_first_audio_stream_is_accepted() -> None:
    body = SIPP_UAC + "m=audio 6004 RTP/AVP 8\n"
    result = _answer(body)
    assert [m.port for m in result.sdp.media] == [10000, 0]


def test_port_zero_in_the_offer_stays_rejected() -> None:
    body = SIPP_UAC.replace("m=audio 6000", "m=audio 0") + "m=audio 6004 RTP/AVP 8\n"
    result = _answer(body)
    assert [m.port for m in result.sdp.media] == [0, 10000]
    assert result.media is not None and result.media.codec == "PCMA"


def test_media_level_connection_overrides_the_session() -> None:
    body = SIPP_UAC.replace("a=rtpmap:0 PCMU/8000", "c=IN IP4 198.51.100.7\na=rtpmap:0 PCMU/8000")
    result = _answer(body)
    assert result.media is not None and result.media.remote_addr == ("198.51.100.7", 6000)


def test_audio_without_any_connection_address_is_an_error() -> None:
    with pytest.raises(SdpError):
        _answer(SIPP_UAC.replace("c=IN IP4 127.0.0.1\n", ""))


def test_ipv6_local_address() -> None:
    text = _answer(SIPP_UAC, local_ip="2001:db8::10").sdp.serialize()
    assert "c=IN IP6 2001:db8::10\r\n" in text
    assert "o=- 7 0 IN IP6 2001:db8::10\r\n" in text


def test_answer_keeps_the_offer_time_line_and_session_version() -> None:
    offer = SessionDescription.parse(SIPP_UAC.replace("t=0 0", "t=3034423619 3042462419"))
    result = _answer(offer, session_version=3)
    assert result.sdp.times == ("3034423619 3042462419",)
    assert result.sdp.origin.session_version == "3"


def test_the_offerer_reads_our_answer_back_to_the_same_stream() -> None:
    for body in (SIPP_UAC, SIPP_UAC_PCAP, ASTERISK, FREESWITCH, SIPP_UAC + "a=sendonly\n"):
        offer = SessionDescription.parse(body)
        ours = _answer(offer)
        assert ours.media is not None
        wire = SessionDescription.parse(ours.sdp.serialize())
        theirs = accept_answer(offer, wire)
        assert (theirs.codec, theirs.payload_type, theirs.dtmf_payload_type) == (
            ours.media.codec,
            ours.media.payload_type,
            ours.media.dtmf_payload_type,
        )
        assert theirs.remote_addr == ("192.0.2.10", 10000)
        mirrored = {"sendrecv": "sendrecv", "recvonly": "sendonly"}
        assert theirs.direction == mirrored[ours.media.direction]


# -- our offer (INVITE without SDP)


def test_make_offer() -> None:
    offer = make_offer(local_ip="192.0.2.10", rtp_port=10002, session_id=9)
    text = offer.serialize()
    assert text == (
        "v=0\r\n"
        "o=- 9 0 IN IP4 192.0.2.10\r\n"
        "s=-\r\n"
        "c=IN IP4 192.0.2.10\r\n"
        "t=0 0\r\n"
        "m=audio 10002 RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )
    assert SessionDescription.parse(text) == offer


def test_make_offer_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        make_offer(local_ip="192.0.2.10", rtp_port=10002, codecs=("G729",))
    with pytest.raises(ValueError):
        make_offer(local_ip="192.0.2.10", rtp_port=10002, ptime_ms=40)


def test_accept_answer_like_sipp_uas() -> None:
    offer = make_offer(local_ip="192.0.2.10", rtp_port=10002)
    reply = SessionDescription.parse(
        "v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 6000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
    )
    params = accept_answer(offer, reply)
    assert params == MediaParams(
        codec="PCMU",
        payload_type=0,
        ptime_ms=20,
        dtmf_payload_type=None,
        remote_addr=("127.0.0.1", 6000),
        direction="sendrecv",
    )


def test_accept_answer_with_pcma_dtmf_ptime_and_hold() -> None:
    offer = make_offer(local_ip="192.0.2.10", rtp_port=10002)
    reply = SessionDescription.parse(
        "v=0\no=- 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\n"
        "m=audio 17050 RTP/AVP 8 101\na=rtpmap:101 telephone-event/8000\na=ptime:30\n"
        "a=recvonly\n"
    )
    params = accept_answer(offer, reply)
    assert (params.codec, params.payload_type, params.dtmf_payload_type) == ("PCMA", 8, 101)
    assert params.ptime_ms == 30
    assert params.direction == "sendonly" and params.sends and not params.receives


@pytest.mark.parametrize(
    "m_lines",
    [
        "m=audio 0 RTP/AVP 0\n",  # rejected
        "m=audio 6000 RTP/AVP 18\na=rtpmap:18 G729/8000\n",  # a codec we never offered
        "m=audio 6000 RTP/AVP 0\nm=video 0 RTP/AVP 99\n",  # more m-lines than offered
    ],
)
def test_accept_answer_rejects_answers_that_do_not_fit(m_lines: str) -> None:
    offer = make_offer(local_ip="192.0.2.10", rtp_port=10002)
    reply = SessionDescription.parse(
        "v=0\no=- 1 1 IN IP4 10.0.0.5\ns=-\nc=IN IP4 10.0.0.5\nt=0 0\n" + m_lines
    )
    with pytest.raises(SdpError):
        accept_answer(offer, reply)
