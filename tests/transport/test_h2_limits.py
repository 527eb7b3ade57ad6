"""Hostile clients at the core's boundary: floods and resets end with
GOAWAY(ENHANCE_YOUR_CALM) or a refusal, and what the core holds for one
client stays within a stated bound."""
from __future__ import annotations

import asyncio

import grpc
from test_h2_core import LOCAL, REQUEST_BLOCK, parse, started

from brain.transport.context import RequestStream
from brain.transport.dispatch import GrpcSession
from brain.transport.h2 import frames
from brain.transport.h2.core import H2Connection
from brain.transport.h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamReset
from brain.transport.h2.hpack import _STRING_CACHE_BYTES, encode_integer, literal_indexed_name
from brain.transport.h2.huffman import CODE_LENGTHS, canonical_codes
from brain.transport.h2.limits import MAX_EARLY_RESETS, MAX_IDLE_FRAMES, MAX_QUEUED_CONTROL
from brain.transport.h2.settings import LocalSettings
from brain.transport.protocol import LOCAL_SETTINGS

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


def test_refusals_by_the_grpc_layer_count_while_the_client_does_not_read():
    """Requests the gRPC layer refuses without running them (a grpc-timeout
    that does not parse, a deadline already past, a non-gRPC request) queue a
    reset or headers each: counted like the core's own replies, so a client
    repeating them without reading is cut off at its next bytes."""
    core = started()
    for _ in range(MAX_QUEUED_CONTROL + 1):
        core.refused_by_caller()
    events = core.receive(PING)
    assert [e.error_code for e in events] == [frames.ENHANCE_YOUR_CALM]
    assert _goaway_code(core.data_to_send()) == frames.ENHANCE_YOUR_CALM
    # read in time, the count starts again
    core = started()
    for _ in range(MAX_QUEUED_CONTROL):
        core.refused_by_caller()
    core.data_to_send()
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


def _data(sid: int, body: bytes, end: bool = False) -> bytes:
    return frames.frame(frames.DATA, frames.FLAG_END_STREAM if end else 0, sid, body)


def _open(sid: int) -> bytes:
    return frames.frame(frames.HEADERS, frames.FLAG_END_HEADERS, sid, REQUEST_BLOCK)


def test_data_past_a_stream_window_resets_that_stream():
    core = started()
    window = LOCAL.initial_window
    core.receive(_open(1) + _open(3))
    events = core.receive(_data(1, b"\x00" * 16384) * (window // 16384) + _data(1, b"\x00"))
    assert events[-1] == StreamReset(1, frames.FLOW_CONTROL_ERROR)
    assert (frames.RST_STREAM, 0, 1, frames.FLOW_CONTROL_ERROR.to_bytes(4, "big")) in parse(core.data_to_send())
    # the connection goes on, and the bytes of the reset stream are credited to it
    assert not core.terminated and core.received.available + core.received.unacked == LOCAL.connection_window - window
    assert [type(e) for e in core.receive(_data(3, b"\x00" * 10))] == [DataReceived]


def test_data_past_the_connection_window_is_a_connection_error():
    core = started()
    window = LOCAL.initial_window
    held = 0
    sid = 1
    events: list = []
    while not events or not isinstance(events[-1], ConnectionTerminated):
        events = core.receive(_open(sid) + _data(sid, b"\x00" * 16384) * (window // 16384))
        held += sum(len(e.data) for e in events if isinstance(e, DataReceived))
        sid += 2
    assert events[-1].error_code == frames.FLOW_CONTROL_ERROR
    assert _goaway_code(core.data_to_send()) == frames.FLOW_CONTROL_ERROR
    # what the client made the layer above hold is the connection window, no more
    assert held <= LOCAL.connection_window


def test_windows_are_credited_only_as_data_is_consumed():
    core = started()
    core.receive(_open(1))
    events = core.receive(_data(1, b"\x00" * 16384) * 16)
    assert len(events) == 16 and parse(core.data_to_send()) == []
    for e in events:
        core.consumed(1, len(e.data))
    updates = [(sid, frames.u32(p)) for t, _, sid, p in parse(core.data_to_send()) if t == frames.WINDOW_UPDATE]
    assert updates == [(1, 16 * 16384)]  # a quarter of the stream window; the connection's quarter is not reached


class _Handlers:
    max_receive = 2 * 1024 * 1024
    http_handler = None

    def __init__(self) -> None:
        self.handler = grpc.unary_unary_rpc_method_handler(self._echo)

    async def _echo(self, request: bytes, context) -> bytes:
        return request

    def cached_handler(self, method: str):
        return self.handler

    async def resolve(self, method: str, metadata):
        return self.handler


class _Link:
    peer = "test"

    def writes_paused(self) -> bool:
        return False

    def peer_identities(self):
        return None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_unfinished_messages_on_many_streams_stay_within_the_windows():
    """A client keeping within the windows, opening stream after stream with
    a message it never finishes: what the connection holds is bounded by the
    connection window and the session's own bound on credited bytes, and the
    streams past that bound end RESOURCE_EXHAUSTED."""

    async def attack() -> tuple[GrpcSession, H2Connection, int]:
        core = H2Connection(LOCAL_SETTINGS)
        core.initiate()
        core.receive(frames.PREFACE + frames.settings([]))
        core.data_to_send()
        session = GrpcSession(core, _Link(), _Handlers())
        message = (1400 * 1024).to_bytes(5, "big")
        sent = 0
        for sid in range(1, 801, 2):
            body = message + b"\x00" * (1024 * 1024 - 5)
            if len(body) > core.received.available:
                body = body[:max(core.received.available, 0)]
            framed = b"".join(_data(sid, body[i:i + 16384]) for i in range(0, len(body), 16384))
            events = core.receive(_open(sid) + framed)
            sent += len(body)
            session.handle(events)
            core.data_to_send()
        return session, core, sent

    session, core, sent = asyncio.run(attack())
    held = session.messages.partial + session.messages.credited
    assert session.messages.partial <= session.messages.partial_limit
    assert session.messages.credited <= session.messages.credited_limit
    assert held <= LOCAL_SETTINGS.connection_window + max(LOCAL_SETTINGS.connection_window, _Handlers.max_receive + 5)
    assert not core.terminated
    # the calls still holding unfinished messages are those the bounds allow;
    # the others ended (RESOURCE_EXHAUSTED) and their bytes were credited back
    assert len(session.calls) <= (session.messages.partial_limit + session.messages.credited_limit) // (1024 * 1024) + 2
    assert sent == 400 * 1024 * 1024


def _framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(5, "big") + m for m in messages)


def test_streaming_request_messages_are_credited_as_the_handler_takes_them():
    credits: list[int] = []

    async def run() -> None:
        requests = RequestStream(None, credits.append)
        requests.push(_framed(b"abc"), 8)
        requests.push(_framed(b"d", b"", b"ef"), 17)  # a run of messages, as a DATA frame brings them
        requests.push(_framed(b"g"), 6)
        assert credits == []
        assert await requests.read() == b"abc"
        assert credits == [8]
        # a run is held as its bytes, and credited once its last message is taken
        assert [await requests.read() for _ in range(2)] == [b"d", b""]
        assert credits == [8]
        assert await requests.read() == b"ef"
        assert credits == [8, 17]
        assert requests.drop() == 6

    asyncio.run(run())


def _huffman(data: bytes) -> bytes:
    codes = canonical_codes(CODE_LENGTHS)
    text = "".join(format(codes[b], f"0{CODE_LENGTHS[b]}b") for b in data)
    text += "1" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big")


def _headers_frames(sid: int, block: bytes, end_stream: bool = True) -> bytes:
    """A header block over HEADERS and CONTINUATION frames of at most 16 KB."""
    pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    out = []
    for i, piece in enumerate(pieces):
        last = frames.FLAG_END_HEADERS if i == len(pieces) - 1 else 0
        if i == 0:
            out.append(frames.frame(frames.HEADERS, last | (frames.FLAG_END_STREAM if end_stream else 0), sid, piece))
        else:
            out.append(frames.frame(frames.CONTINUATION, last, sid, piece))
    return b"".join(out)


BIG_HEADERS = LocalSettings(initial_window=1 << 20, connection_window=1 << 22, max_header_list=1 << 20)


def _started_big() -> H2Connection:
    core = H2Connection(BIG_HEADERS)
    core.initiate()
    core.receive(frames.PREFACE + frames.settings([]))
    core.data_to_send()
    return core


def test_header_block_of_references_to_a_large_entry_is_answered_431():
    core = _started_big()
    # one 4 KB entry in the dynamic table (index 62), then a quarter megabyte
    # of one-byte references to it: a gigabyte of headers, were they decoded
    entry = b"\x40" + encode_integer(1, 7, 0) + b"x" + encode_integer(4000, 7, 0) + b"v" * 4000
    block = REQUEST_BLOCK + entry + b"\xbe" * (256 * 1024 - len(entry))
    events = core.receive(_headers_frames(1, block))
    assert events == [] and not core.terminated and not core.streams
    assert parse(core.data_to_send()) == [
        (frames.HEADERS, frames.FLAG_END_HEADERS | frames.FLAG_END_STREAM, 1, literal_indexed_name(8, b"431")),
    ]
    # the table was kept in step: a request referring to the entry decodes
    events = core.receive(_headers_frames(3, REQUEST_BLOCK + b"\xbe"))
    assert [type(e) for e in events] == [RequestReceived]
    assert events[0].headers[-1] == (b"x", b"v" * 4000)


def test_unique_huffman_values_are_not_cached_and_too_large_ones_refused():
    core = _started_big()
    sid = 1
    for i in range(50):  # values of 20 KB, each different, within the limit
        value = _huffman(b"%05d" % i + b"a" * 20000)
        block = REQUEST_BLOCK + b"\x00" + encode_integer(1, 7, 0) + b"y" + encode_integer(len(value), 7, 0x80) + value
        events = core.receive(_headers_frames(sid, block))
        assert [type(e) for e in events] == [RequestReceived]
        core.reset_stream(sid, frames.CANCEL)
        sid += 2
    assert core.decoder._strings_bytes <= _STRING_CACHE_BYTES
    assert sum(len(k) + len(v) for k, v in core.decoder._strings.items()) <= _STRING_CACHE_BYTES
    # a value decoding to more than the advertised limit is answered 431
    value = _huffman(b"a" * (BIG_HEADERS.max_header_list + 1))
    block = REQUEST_BLOCK + b"\x00" + encode_integer(1, 7, 0) + b"y" + encode_integer(len(value), 7, 0x80) + value
    assert core.receive(_headers_frames(sid, block)) == []
    assert parse(core.data_to_send())[-1][2] == sid and not core.terminated


def test_empty_continuation_flood_is_cut_off():
    core = started()
    limit = core.reader.max_continuations
    events = core.receive(frames.frame(frames.HEADERS, 0, 1, REQUEST_BLOCK[:2]))
    events += core.receive(frames.frame(frames.CONTINUATION, 0, 1, b"") * limit)
    assert events == [] and not core.terminated
    events = core.receive(frames.frame(frames.CONTINUATION, 0, 1, b""))
    assert [e.error_code for e in events] == [frames.ENHANCE_YOUR_CALM]
    assert _goaway_code(core.data_to_send()) == frames.ENHANCE_YOUR_CALM


def test_settings_flood_read_by_the_client_is_cut_off_between_requests():
    core = started()  # its SETTINGS count: one
    for n in (1000,) * 9 + (999,):
        assert core.receive(frames.settings([]) * n) == []
        core.data_to_send()  # the client reads the acks
    # a request in between starts the count again
    sid = 1
    core.receive(_open(sid) + _data(sid, b"", end=True))
    core.data_to_send()
    assert core.receive(frames.settings([]) * MAX_IDLE_FRAMES) == []
    core.data_to_send()
    events = core.receive(frames.settings([]) + frames.frame(frames.PRIORITY, 0, 3, b"\x00" * 5))
    assert [e.error_code for e in events] == [frames.ENHANCE_YOUR_CALM]


def test_empty_data_and_unknown_frames_count_as_frames_without_content():
    core = started()
    core.receive(_open(1))
    events = core.receive(_data(1, b"") * MAX_IDLE_FRAMES)
    assert len(events) == MAX_IDLE_FRAMES and not core.terminated
    events = core.receive(frames.frame(0x42, 0, 0, b"x"))
    assert [e.error_code for e in events] == [frames.ENHANCE_YOUR_CALM]
