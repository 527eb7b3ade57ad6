"""Hostile clients at the core's boundary: floods and resets end with
GOAWAY(ENHANCE_YOUR_CALM) or a refusal, and what the core holds for one
client stays within a stated bound."""
from __future__ import annotations

from test_h2_core import parse, started

from brain.transport.h2 import frames
from brain.transport.h2.events import ConnectionTerminated
from brain.transport.h2.limits import MAX_QUEUED_CONTROL

PING = frames.frame(frames.PING, 0, 0, b"12345678")
PING_ACK_SIZE = 9 + 8


def _goaway_code(out: bytes) -> int:
    last = parse(out)[-1]
    assert last[0] == frames.GOAWAY
    return frames.u32(last[3][4:8])


def test_ping_flood_not_read_is_cut_off_with_a_bounded_queue():
    core = started()
    events = core.receive(PING * (MAX_QUEUED_CONTROL + 1))
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert events[0].error_code == frames.ENHANCE_YOUR_CALM
    assert core.terminated
    # what is queued is the acks up to the bound, and the GOAWAY
    assert core.output_size <= MAX_QUEUED_CONTROL * PING_ACK_SIZE + 9 + 8 + 256
    assert _goaway_code(core.data_to_send()) == frames.ENHANCE_YOUR_CALM
    assert core.receive(PING) == []


def test_pings_whose_acks_are_taken_are_never_cut_off():
    core = started()
    for _ in range(5):
        assert core.receive(PING * (MAX_QUEUED_CONTROL - 1)) == []
        assert len(core.data_to_send()) == (MAX_QUEUED_CONTROL - 1) * PING_ACK_SIZE
    assert not core.terminated


def test_settings_flood_not_read_is_cut_off():
    core = started()
    events = core.receive(frames.settings([]) * (MAX_QUEUED_CONTROL + 1))
    assert [e.error_code for e in events] == [frames.ENHANCE_YOUR_CALM]
