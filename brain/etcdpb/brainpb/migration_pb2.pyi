from brain.etcdpb.mvccpb import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenRequest(_message.Message):
    __slots__ = ("source_cluster_id",)
    SOURCE_CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    source_cluster_id: int
    def __init__(self, source_cluster_id: _Optional[int] = ...) -> None: ...

class OpenResponse(_message.Message):
    __slots__ = ("resumed", "revision", "compact_revision")
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    resumed: bool
    revision: int
    compact_revision: int
    def __init__(self, resumed: _Optional[bool] = ..., revision: _Optional[int] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("source_cluster_id", "compact_revision")
    SOURCE_CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    source_cluster_id: int
    compact_revision: int
    def __init__(self, source_cluster_id: _Optional[int] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class BaseRequest(_message.Message):
    __slots__ = ("kvs", "last")
    KVS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    kvs: _containers.RepeatedCompositeFieldContainer[_kv_pb2.KeyValue]
    last: bool
    def __init__(self, kvs: _Optional[_Iterable[_Union[_kv_pb2.KeyValue, _Mapping]]] = ..., last: _Optional[bool] = ...) -> None: ...

class Revision(_message.Message):
    __slots__ = ("revision", "events", "continued")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    events: _containers.RepeatedCompositeFieldContainer[_kv_pb2.Event]
    continued: bool
    def __init__(self, revision: _Optional[int] = ..., events: _Optional[_Iterable[_Union[_kv_pb2.Event, _Mapping]]] = ..., continued: _Optional[bool] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("revisions",)
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[Revision]
    def __init__(self, revisions: _Optional[_Iterable[_Union[Revision, _Mapping]]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("ID", "TTL")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ID: int
    TTL: int
    def __init__(self, ID: _Optional[int] = ..., TTL: _Optional[int] = ...) -> None: ...

class LeasesRequest(_message.Message):
    __slots__ = ("leases", "first", "last")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    first: bool
    last: bool
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., first: _Optional[bool] = ..., last: _Optional[bool] = ...) -> None: ...

class CutOverRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MigrationResponse(_message.Message):
    __slots__ = ("revision", "count")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    revision: int
    count: int
    def __init__(self, revision: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...
