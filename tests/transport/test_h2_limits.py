"""Hostile clients at the core's boundary: floods and resets end with
GOAWAY(ENHANCE_YOUR_CALM) or a refusal, and what the core holds for one
client stays within a stated bound."""
from __future__ import annotations

from test_h2_core import REQUEST_BLOCK, parse, started

from brain.transport.h2 import frames
from brain.transport.h2.core import H2Connection
from brain.transport.h2.events import ConnectionTerminated, RequestReceived, StreamReset
from brain.transport.h2.limits import MAX_EARLY_RESETS, MAX_QUEUED_CONTROL
from brain.transport.h2.settings import LocalSettings

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


def rapid_resets(first: int, n: int) -> bytes:
    out = []
    for sid in range(first, first + 2 * n, 2):
        out.append(
            frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid, REQUEST_BLOCK)
            + frames.frame(frames.DATA, frames.FLAG_END_STREAM, sid, b"\x00\x00\x00\x00\x02hi")
            + frames.rst_stream(sid, frames.CANCEL)
        )
    return b"".join(out)


def test_rapid_reset_is_cut_off_while_the_handlers_have_not_stopped():
    core = started()
    events = core.receive(rapid_resets(1, MAX_EARLY_RESETS + 1))
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == frames.ENHANCE_YOUR_CALM
    # every stream reported is one whose work the layer above was told to stop
    assert sum(isinstance(e, RequestReceived) for e in events) == MAX_EARLY_RESETS + 1
    assert sum(isinstance(e, StreamReset) for e in events) == MAX_EARLY_RESETS
    assert not core.streams
    assert _goaway_code(core.data_to_send()) == frames.ENHANCE_YOUR_CALM


def test_resets_whose_work_has_stopped_are_never_cut_off():
    core = started()
    sid = 1
    for _ in range(3):
        events = core.receive(rapid_resets(sid, MAX_EARLY_RESETS))
        sid += 2 * MAX_EARLY_RESETS
        resets = [e for e in events if isinstance(e, StreamReset)]
        assert len(resets) == MAX_EARLY_RESETS
        for _ in resets:
            core.reset_handled()
    assert not core.terminated and core.budget.early_resets == 0


def test_streams_past_the_advertised_limit_are_refused():
    core = H2Connection(LocalSettings(1 << 20, 1 << 22, 1 << 16, max_concurrent_streams=3))
    core.initiate()
    sent = parse(core.data_to_send())
    assert (frames.SETTINGS_MAX_CONCURRENT_STREAMS, 3) in frames.parse_settings(sent[0][3])
    core.receive(frames.PREFACE + frames.settings([]))
    core.data_to_send()
    opened = b"".join(
        frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid, REQUEST_BLOCK) for sid in (1, 3, 5, 7, 9)
    )
    events = core.receive(opened)
    assert [e.stream_id for e in events] == [1, 3, 5]
    assert parse(core.data_to_send()) == [
        (frames.RST_STREAM, 0, 7, frames.REFUSED_STREAM.to_bytes(4, "big")),
        (frames.RST_STREAM, 0, 9, frames.REFUSED_STREAM.to_bytes(4, "big")),
    ]
    assert len(core.streams) == 3
    # a stream ending makes room for the next
    core.reset_stream(1, frames.CANCEL)
    core.data_to_send()
    assert [e.stream_id for e in core.receive(
        frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, 11, REQUEST_BLOCK))] == [11]
