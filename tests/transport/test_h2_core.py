"""The sans-IO HTTP/2 core, fed bytes directly: no sockets, no event loop."""
from __future__ import annotations

from brain.transport.h2 import frames
from brain.transport.h2.core import H2Connection
from brain.transport.h2.events import (
    ConnectionTerminated, DataReceived, RequestReceived, StreamDrained, StreamEnded, StreamReset,
)
from brain.transport.h2.hpack import literal
from brain.transport.h2.settings import LocalSettings

LOCAL = LocalSettings(initial_window=1 << 20, connection_window=1 << 22, max_header_list=1 << 16)
# :method POST, :scheme http (static), :path and content-type as literals
REQUEST_BLOCK = b"\x83\x86" + literal(b":path", b"/test.Echo/Unary") + literal(b"content-type", b"application/grpc")


def parse(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        lt, flags, sid = frames.HEADER.unpack_from(data, pos)
        n = lt >> 8
        out.append((lt & 0xFF, flags, sid, data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    assert pos == len(data)
    return out


def started(peer_settings: list[tuple[int, int]] = ()) -> H2Connection:
    core = H2Connection(LOCAL)
    core.initiate()
    core.receive(frames.PREFACE + frames.settings(list(peer_settings)))
    core.data_to_send()
    return core


def request(core: H2Connection, sid: int = 1, body: bytes = b"\x00\x00\x00\x00\x02hi", end: bool = True) -> list:
    return core.receive(
        frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid, REQUEST_BLOCK)
        + frames.frame(frames.DATA, frames.FLAG_END_STREAM if end else 0, sid, body)
    )


def test_preface_and_settings():
    core = H2Connection(LOCAL)
    core.initiate()
    sent = parse(core.data_to_send())
    assert sent[0][0] == frames.SETTINGS and sent[0][1] == 0
    assert (frames.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20) in frames.parse_settings(sent[0][3])
    assert sent[1] == (frames.WINDOW_UPDATE, 0, 0, ((1 << 22) - 65535).to_bytes(4, "big"))
    # the preface may arrive in pieces
    assert core.receive(frames.PREFACE[:5]) == []
    assert core.receive(frames.PREFACE[5:] + frames.settings([(frames.SETTINGS_MAX_FRAME_SIZE, 32768)])) == []
    assert parse(core.data_to_send()) == [(frames.SETTINGS, frames.FLAG_ACK, 0, b"")]
    assert core.peer.max_frame == 32768
    core.receive(frames.frame(frames.PING, 0, 0, b"12345678"))
    assert parse(core.data_to_send()) == [(frames.PING, frames.FLAG_ACK, 0, b"12345678")]


def test_bad_preface_terminates_with_goaway():
    core = H2Connection(LOCAL)
    events = core.receive(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20)
    assert len(events) == 1 and isinstance(events[0], ConnectionTerminated)
    assert events[0].error_code == frames.PROTOCOL_ERROR
    assert parse(core.data_to_send())[-1][0] == frames.GOAWAY
    assert core.terminated and core.receive(frames.PREFACE) == []


def test_unary_request_to_events_and_one_piece_response():
    core = started()
    events = request(core)
    # a body read with its headers rides on the request event
    assert [type(e) for e in events] == [RequestReceived]
    assert events[0].stream_id == 1 and events[0].end_stream
    assert (b":path", b"/test.Echo/Unary") in events[0].headers
    assert events[0].data == b"\x00\x00\x00\x00\x02hi"
    # body bytes read later are events of their own
    events = core.receive(
        frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, 3, REQUEST_BLOCK)
    ) + core.receive(frames.frame(frames.DATA, frames.FLAG_END_STREAM, 3, b"\x00" * 5))
    assert [type(e) for e in events] == [RequestReceived, DataReceived]
    assert events[0].data is None and not events[0].end_stream
    assert events[1] == DataReceived(3, b"\x00" * 5, True)
    assert core.send_response(1, b"\x88", b"\x00\x00\x00\x00\x02", b"ok", b"\x40\x01x\x010")
    sent = parse(core.data_to_send())
    assert [(t, f, s) for t, f, s, _ in sent] == [
        (frames.HEADERS, frames.FLAG_END_HEADERS, 1),
        (frames.DATA, 0, 1),
        (frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, 1),
    ]
    assert sent[1][3] == b"\x00\x00\x00\x00\x02ok"
    assert 1 not in core.streams  # closed both ways: no RST_STREAM


def test_response_before_the_request_ends_resets_with_no_error():
    core = started()
    request(core, end=False)
    assert core.send_headers(1, b"\x88", end_stream=True)
    sent = parse(core.data_to_send())
    assert sent[-1] == (frames.RST_STREAM, 0, 1, b"\x00\x00\x00\x00")
    # the client's further DATA on it is dropped quietly
    assert core.receive(frames.frame(frames.DATA, 0, 1, b"late")) == []
    assert not core.terminated


def test_send_window_accounting_and_drain_events():
    core = started([(frames.SETTINGS_INITIAL_WINDOW_SIZE, 10)])
    request(core)
    core.send_headers(1, b"\x88")
    assert not core.send_data(1, [b"a" * 25])
    sent = parse(core.data_to_send())
    assert [len(p) for t, _, _, p in sent if t == frames.DATA] == [10]
    assert core.has_pending(1) and 1 in core.blocked
    assert core.send_window == 65535 - 10
    events = core.receive(frames.window_update(1, 5))
    assert events == []  # still waiting
    assert [len(p) for t, _, _, p in parse(core.data_to_send()) if t == frames.DATA] == [5]
    assert not core.end_stream(1, b"\x40\x01x\x010")  # the trailers wait behind the data
    events = core.receive(frames.window_update(1, 100))
    assert events == [StreamEnded(1)]
    sent = parse(core.data_to_send())
    assert [len(p) for t, _, _, p in sent if t == frames.DATA] == [10]
    assert sent[-1][0] == frames.HEADERS and sent[-1][1] & frames.FLAG_END_STREAM
    assert core.send_window == 65535 - 25

    request(core, sid=3)
    core.send_data(3, [b"b" * 12])
    core.data_to_send()
    # a larger initial window applies to open streams at once
    assert core.receive(frames.settings([(frames.SETTINGS_INITIAL_WINDOW_SIZE, 100)])) == [StreamDrained(3)]


def test_connection_window_blocks_all_streams():
    core = started([(frames.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)])
    request(core)
    core.send_data(1, [b"x" * 70000])
    core.data_to_send()
    assert core.send_window == 0 and core.has_pending(1)
    assert core.receive(frames.window_update(0, 10000)) == [StreamDrained(1)]
    assert sum(len(p) for t, _, _, p in parse(core.data_to_send()) if t == frames.DATA) == 70000 - 65535


def test_receive_windows_are_credited_in_quarters_as_data_is_consumed():
    core = started()
    request(core, end=False, body=b"")
    quarter = (1 << 20) // 4
    chunk = b"\x00" * 16384
    sent = 0
    while sent + len(chunk) < quarter:
        core.receive(frames.frame(frames.DATA, 0, 1, chunk))
        sent += len(chunk)
    core.receive(frames.frame(frames.DATA, 0, 1, chunk))
    sent += len(chunk)
    assert parse(core.data_to_send()) == []  # nothing consumed yet
    core.consumed(1, sent - len(chunk))
    assert parse(core.data_to_send()) == []
    core.consumed(1, len(chunk))
    updates = [(s, frames.u32(p)) for t, _, s, p in parse(core.data_to_send()) if t == frames.WINDOW_UPDATE]
    assert updates == [(1, sent)]
    assert core.received.unacked == sent  # the connection's quarter is larger


def test_window_errors():
    core = started()
    request(core, end=False)
    events = core.receive(frames.window_update(1, frames.MAX_WINDOW))
    assert events == [StreamReset(1, frames.FLOW_CONTROL_ERROR)]
    assert parse(core.data_to_send())[-1] == (frames.RST_STREAM, 0, 1, frames.FLOW_CONTROL_ERROR.to_bytes(4, "big"))
    events = core.receive(frames.window_update(0, 0))
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == frames.PROTOCOL_ERROR


def test_client_reset_and_headers_over_continuation():
    core = started()
    block = REQUEST_BLOCK
    events = core.receive(
        frames.frame(frames.HEADERS, frames.FLAG_END_STREAM, 1, block[:4])
        + frames.frame(frames.CONTINUATION, 0, 1, block[4:10])
        + frames.frame(frames.CONTINUATION, frames.FLAG_END_HEADERS, 1, block[10:])
    )
    assert [type(e) for e in events] == [RequestReceived] and events[0].end_stream
    request(core, sid=3, end=False)
    assert core.receive(frames.rst_stream(3, frames.CANCEL)) == [StreamReset(3, frames.CANCEL)]
    assert 3 not in core.streams


def test_graceful_goaway_refuses_new_streams():
    core = started()
    request(core)
    core.goaway()
    assert parse(core.data_to_send())[-1][0] == frames.GOAWAY
    assert request(core, sid=3) == []  # refused: nothing for the layer above
    assert (frames.RST_STREAM, 0, 3, frames.REFUSED_STREAM.to_bytes(4, "big")) in parse(core.data_to_send())
    assert core.send_response(1, b"\x88", b"", b"", b"\x40\x01x\x010")


def test_a_body_ended_by_data_waits_for_window():
    core = started([(frames.SETTINGS_INITIAL_WINDOW_SIZE, 4)])
    core.receive(frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, 1, b"\x82\x86\x84"))
    assert not core.send_headers(1, b"\x88")
    core.send_data(1, [b"abcdefgh"])
    assert not core.end_stream(1, None)
    assert [p for t, _, _, p in parse(core.data_to_send()) if t == frames.DATA] == [b"abcd"]
    assert core.receive(frames.window_update(1, 10)) == [StreamEnded(1)]
    # the rest of the body, then an empty END_STREAM DATA frame
    assert parse(core.data_to_send()) == [(frames.DATA, 0, 1, b"efgh"), (frames.DATA, frames.FLAG_END_STREAM, 1, b"")]
    assert not core.is_open(1)


def test_priority_fields_of_a_block_continued_and_a_stream_depending_on_itself():
    core = started()
    block = REQUEST_BLOCK
    priority = (0).to_bytes(4, "big") + b"\x10"  # depends on stream 0, weight 17
    events = core.receive(
        frames.frame(frames.HEADERS, frames.FLAG_END_STREAM | frames.FLAG_PRIORITY, 1, priority + block[:4])
        + frames.frame(frames.CONTINUATION, frames.FLAG_END_HEADERS, 1, block[4:])
    )
    assert [type(e) for e in events] == [RequestReceived] and (b":path", b"/test.Echo/Unary") in events[0].headers
    itself = (3).to_bytes(4, "big") + b"\x10"
    events = core.receive(
        frames.frame(frames.HEADERS, frames.FLAG_END_STREAM | frames.FLAG_PRIORITY, 3, itself + block[:4])
        + frames.frame(frames.CONTINUATION, frames.FLAG_END_HEADERS, 3, block[4:])
    )
    assert events == [] and not core.terminated
    assert parse(core.data_to_send())[-1] == (frames.RST_STREAM, 0, 3, frames.PROTOCOL_ERROR.to_bytes(4, "big"))


def test_a_connection_error_drops_queued_output_and_sends_only_the_goaway():
    """A response queued for a client that is then cut off is not written:
    closing copies the GOAWAY alone, whatever the client's windows let queue."""
    core = started()
    core.data_to_send()
    core.emit(b"\x00" * (4 << 20))  # as a large response's frames would be
    core.terminate(frames.ENHANCE_YOUR_CALM, "calm")
    assert [(t, sid) for t, _, sid, _ in parse(core.data_to_send())] == [(frames.GOAWAY, 0)]
