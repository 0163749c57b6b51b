"""Server and client transactions (RFC 3261 §17, RFC 6026): matching, retransmissions, timers.

Time is a parameter: every test walks a fake clock with T1=0.5 s, T2=4 s, T4=5 s.
"""

from __future__ import annotations

import pytest

from telephony.sip.message import SipRequest, apply_rport, build_response, parse_message
from telephony.sip.transaction import (
    DEFAULT_TIMERS,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    SipTimers,
    TransactionError,
    TxState,
    cancelled_key,
    transaction_key,
)
from tests import sip_packets as pkt

T1, T2, T4 = DEFAULT_TIMERS.t1, DEFAULT_TIMERS.t2, DEFAULT_TIMERS.t4
ADDR = pkt.SIPP_ADDR


def _request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def _invite_tx() -> InviteServerTransaction:
    return InviteServerTransaction(apply_rport(_request(pkt.UAC_INVITE), ADDR), ADDR)


def _fire_until(
    tx: InviteServerTransaction | NonInviteClientTransaction, end: float
) -> list[float]:
    """Service the transaction's timer until `end`; the times at which something was sent."""
    sent: list[float] = []
    while (deadline := tx.deadline()) is not None and deadline <= end:
        if tx.handle_timer(deadline):
            sent.append(deadline)
    return sent


def test_timer_values() -> None:
    assert (T1, T2, T4) == (0.5, 4.0, 5.0)
    assert DEFAULT_TIMERS.timeout == 32.0
    assert SipTimers(t1=0.1).timeout == pytest.approx(6.4)


# -- matching (§17.2.3) ----------------------------------------------------------------------------


def test_key_is_branch_sent_by_and_method() -> None:
    invite = _request(pkt.CANCEL_INVITE)
    assert transaction_key(invite) == ("z9hG4bK-13185-1-0", "127.0.0.1:5061", "INVITE")


def test_ack_for_a_non_2xx_maps_to_the_invite() -> None:
    assert transaction_key(_request(pkt.CANCEL_ACK)) == transaction_key(_request(pkt.CANCEL_INVITE))


def test_ack_for_a_2xx_has_its_own_branch() -> None:
    assert transaction_key(_request(pkt.UAC_ACK)) != transaction_key(_request(pkt.UAC_INVITE))


def test_cancel_has_its_own_transaction_but_finds_the_invite() -> None:
    cancel = _request(pkt.CANCEL)
    invite = _request(pkt.CANCEL_INVITE)
    assert transaction_key(cancel) != transaction_key(invite)
    assert cancelled_key(cancel) == transaction_key(invite)


def test_same_branch_from_another_sender_is_another_transaction() -> None:
    moved = pkt.UAC_INVITE.replace(b"127.0.0.1:5061;branch", b"127.0.0.1:5062;branch")
    assert transaction_key(_request(moved)) != transaction_key(_request(pkt.UAC_INVITE))


def test_rfc2543_peers_without_magic_cookie() -> None:
    old = pkt.CANCEL_INVITE.replace(b"branch=z9hG4bK-13185-1-0", b"branch=1")
    old_ack = pkt.CANCEL_ACK.replace(b"branch=z9hG4bK-13185-1-0", b"branch=1")
    key = transaction_key(_request(old))
    assert key[0] == "rfc2543"
    assert transaction_key(_request(old_ack)) == key
    bye = _request(pkt.UAC_BYE.replace(b"branch=z9hG4bK-12980-1-7", b"branch=7"))
    assert transaction_key(bye) != key


# -- INVITE server transaction (§17.2.1) ---------------------------------------------------------


def test_invite_retransmission_gets_the_latest_provisional() -> None:
    tx = _invite_tx()
    assert tx.state is TxState.PROCEEDING
    assert tx.receive_request(0.1) is None  # nothing sent yet
    trying = tx.respond(build_response(tx.request, 100), 0.0)
    assert tx.receive_request(0.2) == trying
    ringing = tx.respond(build_response(tx.request, 180, to_tag="g"), 0.3)
    assert tx.receive_request(0.4) == ringing
    assert tx.deadline() is None  # provisionals are not retransmitted


def test_non_2xx_final_timer_g_doubles_to_t2_and_timer_h_gives_up() -> None:
    tx = _invite_tx()
    busy = tx.respond(build_response(tx.request, 486, to_tag="g"), 0.0)
    assert tx.state is TxState.COMPLETED
    sent = _fire_until(tx, 40.0)
    # Intervals T1, 2T1, 4T1, then T2 until Timer H at 64*T1.
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.state is TxState.TERMINATED
    assert tx.timed_out
    assert tx.receive_request(41.0) is None
    assert busy.startswith(b"SIP/2.0 486 Busy Here\r\n")


def test_timer_g_resends_the_final_response() -> None:
    tx = _invite_tx()
    busy = tx.respond(build_response(tx.request, 486, to_tag="g"), 0.0)
    assert tx.handle_timer(0.4) == []
    assert tx.handle_timer(0.5) == [busy]
    assert tx.receive_request(0.7) == busy  # a retransmitted INVITE too


def test_ack_confirms_then_timer_i_terminates() -> None:
    tx = _invite_tx()
    tx.respond(build_response(tx.request, 487, to_tag="g"), 0.0)
    tx.handle_timer(0.5)
    assert tx.receive_ack(0.8) is False  # absorbed: not for the TU
    assert tx.state is TxState.CONFIRMED
    assert tx.deadline() == pytest.approx(0.8 + T4)
    assert tx.receive_ack(1.0) is False and tx.receive_request(1.0) is None
    assert tx.handle_timer(5.0) == []
    assert tx.state is TxState.CONFIRMED
    assert tx.handle_timer(5.8) == []
    assert tx.state is TxState.TERMINATED
    assert not tx.timed_out


def test_2xx_moves_to_accepted_which_absorbs_retransmissions() -> None:
    tx = _invite_tx()
    tx.respond(build_response(tx.request, 100), 0.0)
    ok = tx.respond(build_response(tx.request, 200, to_tag="g"), 1.0)
    assert tx.state is TxState.ACCEPTED
    assert tx.receive_request(1.2) is None  # RFC 6026: the TU resends the 2xx, not us
    assert tx.respond(build_response(tx.request, 200, to_tag="g"), 1.5) == ok
    assert tx.receive_ack(2.0) is True  # a 2xx ACK reusing the branch goes up
    assert tx.deadline() == pytest.approx(1.0 + 64 * T1)  # Timer L
    tx.handle_timer(33.0)
    assert tx.state is TxState.TERMINATED and not tx.timed_out


def test_ack_before_a_final_response_is_ignored() -> None:
    tx = _invite_tx()
    assert tx.receive_ack(0.1) is False
    assert tx.state is TxState.PROCEEDING


def test_impossible_responses_from_the_tu_raise() -> None:
    tx = _invite_tx()
    tx.respond(build_response(tx.request, 486, to_tag="g"), 0.0)
    with pytest.raises(TransactionError):
        tx.respond(build_response(tx.request, 200, to_tag="g"), 0.1)
    with pytest.raises(TransactionError):
        tx.respond(build_response(tx.request, 180, to_tag="g"), 0.1)


# -- non-INVITE server transaction (§17.2.2) -----------------------------------------------------


def test_non_invite_server_transaction() -> None:
    bye = _request(pkt.UAC_BYE)
    tx = NonInviteServerTransaction(bye, ADDR)
    assert tx.state is TxState.TRYING
    assert tx.receive_request(0.1) is None  # Trying: absorbed
    ok = tx.respond(build_response(bye, 200), 0.2)
    assert tx.state is TxState.COMPLETED
    assert tx.receive_request(5.0) == ok
    assert tx.deadline() == pytest.approx(0.2 + 64 * T1)  # Timer J
    assert tx.handle_timer(10.0) == []
    tx.handle_timer(32.2)
    assert tx.state is TxState.TERMINATED
    with pytest.raises(TransactionError):
        tx.respond(build_response(bye, 200), 33.0)


def test_non_invite_provisional_is_resent_on_retransmission() -> None:
    options = _request(pkt.OPTIONS_RPORT)
    tx = NonInviteServerTransaction(options, ADDR)
    trying = tx.respond(build_response(options, 100), 0.0)
    assert tx.state is TxState.PROCEEDING
    assert tx.receive_request(0.5) == trying
    tx.respond(build_response(options, 200, to_tag="x"), 0.6)
    assert tx.state is TxState.COMPLETED


# -- non-INVITE client transaction (§17.1.2) -----------------------------------------------------


def _bye_client(now: float = 0.0) -> NonInviteClientTransaction:
    return NonInviteClientTransaction(_request(pkt.UAC_BYE), ADDR, now)


def test_client_retransmits_with_timer_e_until_timer_f() -> None:
    tx = _bye_client()
    assert tx.key == ("z9hG4bK-12980-1-7", "BYE")
    sent = _fire_until(tx, 40.0)
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.state is TxState.TERMINATED and tx.timed_out


def test_client_final_response_completes_then_timer_k() -> None:
    tx = _bye_client()
    assert tx.handle_timer(0.5) == [tx.data]
    ok = build_response(_request(pkt.UAC_BYE), 200)
    assert tx.receive_response(ok, 0.7) is True
    assert tx.state is TxState.COMPLETED
    assert tx.receive_response(ok, 0.9) is False  # retransmitted response absorbed
    assert tx.deadline() == pytest.approx(0.7 + T4)
    assert tx.handle_timer(5.7) == []
    assert tx.state is TxState.TERMINATED and not tx.timed_out


def test_client_provisional_slows_retransmission_to_t2() -> None:
    tx = _bye_client()
    trying = build_response(_request(pkt.UAC_BYE), 100)
    assert tx.receive_response(trying, 0.2) is True
    assert tx.state is TxState.PROCEEDING
    assert tx.deadline() == pytest.approx(0.2 + T2)
    sent = _fire_until(tx, 40.0)
    assert sent[:3] == [4.2, 8.2, 12.2]
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert max(sent) < 32.0  # Timer F still counts from the start


def test_tables_only_name_real_states() -> None:
    from telephony.sip import transaction

    for table in (
        transaction._INVITE_SERVER,
        transaction._NON_INVITE_SERVER,
        transaction._NON_INVITE_CLIENT,
    ):
        for (state, _), (next_state, _) in table.items():
            assert state is not TxState.TERMINATED  # nothing leaves Terminated
            assert isinstance(next_state, TxState)
