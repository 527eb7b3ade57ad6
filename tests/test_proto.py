"""The etcd v3 wire definitions in proto/ and the generated stubs in brain/etcdpb.

* The committed stubs are what proto/generate.py produces from proto/.
* Every message, field, enum value and rpc of etcd's own .proto files (from
  Debian's golang-etcd-server-dev, or ETCD_PROTO_DIR) exists in ours with the
  same name, number, type, label and oneof; plus the additions of etcd 3.5,
  which Debian's etcd 3.4 sources lack.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("brain") is None:  # plain `pytest` without an install
    sys.path.insert(0, str(REPO))

from google.protobuf import descriptor_pb2  # noqa: E402
from google.protobuf.descriptor import FieldDescriptor  # noqa: E402

from brain import etcdpb  # noqa: E402

GENERATE = REPO / "proto" / "generate.py"
OUR_PROTOS = {
    "etcdserverpb/rpc.proto": etcdpb.rpc_pb2,
    "mvccpb/kv.proto": etcdpb.kv_pb2,
    "authpb/auth.proto": etcdpb.auth_pb2,
}


def _grpc_tools_version() -> str | None:
    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------
# Stubs are current
# ---------------------------------------------------------------------------


def test_generated_stubs_are_current():
    have = _grpc_tools_version()
    if have is None:
        pytest.skip("grpcio-tools is not installed; cannot regenerate the stubs")
    if have != etcdpb.GRPCIO_TOOLS_VERSION:
        pytest.skip(
            f"stubs were generated with grpcio-tools {etcdpb.GRPCIO_TOOLS_VERSION}, "
            f"this machine has {have}: protoc output differs between versions "
            "(test_descriptors_match_proto_sources still checks the content)"
        )
    proc = subprocess.run(
        [sys.executable, str(GENERATE), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        "brain/etcdpb is stale; run `python proto/generate.py` and commit.\n"
        + proc.stdout
        + proc.stderr
    )


def test_descriptors_match_proto_sources(tmp_path):
    """Version-independent variant: compiled .proto == descriptors in the stubs."""
    try:
        from grpc_tools import protoc
    except ImportError:
        pytest.skip("grpcio-tools is not installed; cannot compile proto/")
    out = tmp_path / "set.pb"
    rc = protoc.main(
        ["protoc", f"-I{REPO / 'proto'}", f"--descriptor_set_out={out}", *OUR_PROTOS]
    )
    assert rc == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    compiled = {f.name: f for f in fds.file}
    assert set(compiled) == set(OUR_PROTOS)
    for name, module in OUR_PROTOS.items():
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        fresh = compiled[name]
        _clear_json_names(fresh.message_type)  # descriptor sets add them; gencode does not
        _clear_json_names(committed.message_type)
        assert committed == fresh, f"brain/etcdpb stubs for {name} are stale"


def _clear_json_names(messages) -> None:
    for m in messages:
        for field in m.field:
            field.ClearField("json_name")
        _clear_json_names(m.nested_type)


def test_coexists_with_other_etcd_stubs():
    """Our private descriptor pool lets the etcd3 client package load too."""
    pytest.importorskip("etcd3")
    code = (
        "import etcd3.etcdrpc\n"
        "from brain.etcdpb import rpc_pb2, kv_pb2\n"
        "r = rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=b'k', value=b'v')], count=1)\n"
        "o = etcd3.etcdrpc.RangeResponse.FromString(r.SerializeToString())\n"
        "assert o.kvs[0].value == b'v' and o.count == 1\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------
# A small parser for etcd's .proto files
# ---------------------------------------------------------------------------

SCALARS = {
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
    "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
}

_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*|-?\d+|[{}()\[\];=<>,:]')


def _tokens(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return _TOKEN_RE.findall(text)


class ProtoFile:
    """messages: full name -> {field name: (number, type, repeated, oneof)}
    enums: full name -> {value name: number}
    services: full name -> {rpc: (input, output, client_stream, server_stream)}
    Types are left unresolved here (see resolve_types)."""

    def __init__(self, text: str):
        self.package = ""
        self.messages: dict[str, dict[str, tuple]] = {}
        self.enums: dict[str, dict[str, int]] = {}
        self.services: dict[str, dict[str, tuple]] = {}
        self._scopes: dict[str, str] = {}  # message full name -> its scope, for resolving
        self._t = _tokens(text)
        self._i = 0
        self._parse_file()

    # -- token helpers
    def _peek(self) -> str | None:
        return self._t[self._i] if self._i < len(self._t) else None

    def _next(self) -> str:
        tok = self._t[self._i]
        self._i += 1
        return tok

    def _expect(self, tok: str) -> None:
        got = self._next()
        assert got == tok, f"expected {tok!r}, got {got!r} near token {self._i}"

    def _skip_statement(self) -> None:
        """Skip to the ';' ending this statement, across balanced braces."""
        depth = 0
        while True:
            tok = self._next()
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
            elif tok == ";" and depth == 0:
                return

    def _skip_block(self) -> None:
        self._expect("{")
        depth = 1
        while depth:
            tok = self._next()
            depth += {"{": 1, "}": -1}.get(tok, 0)

    def _skip_field_options(self) -> None:
        if self._peek() == "[":
            depth = 0
            while True:
                tok = self._next()
                depth += {"[": 1, "]": -1}.get(tok, 0)
                if depth == 0:
                    break

    def _full(self, scope: str, name: str) -> str:
        return f"{scope}.{name}" if scope else name

    # -- grammar
    def _parse_file(self) -> None:
        while self._peek() is not None:
            tok = self._next()
            if tok == "package":
                self.package = self._next()
                self._expect(";")
            elif tok in ("syntax", "import", "option"):
                self._skip_statement()
            elif tok == "message":
                self._parse_message(self.package)
            elif tok == "enum":
                self._parse_enum(self.package)
            elif tok == "service":
                self._parse_service()
            elif tok == ";":
                continue
            else:
                raise AssertionError(f"unexpected top-level token {tok!r}")

    def _parse_message(self, scope: str) -> None:
        name = self._full(scope, self._next())
        fields: dict[str, tuple] = {}
        self.messages[name] = fields
        self._scopes[name] = scope
        self._expect("{")
        self._parse_message_body(name, fields, oneof=None)

    def _parse_message_body(self, name: str, fields: dict, oneof: str | None) -> None:
        while True:
            tok = self._next()
            if tok == "}":
                return
            if tok == ";":
                continue
            if tok == "message":
                self._parse_message(name)
            elif tok == "enum":
                self._parse_enum(name)
            elif tok in ("option", "reserved", "extensions"):
                self._skip_statement()
            elif tok == "oneof":
                oneof_name = self._next()
                self._expect("{")
                self._parse_message_body(name, fields, oneof=oneof_name)
            else:
                repeated = False
                if tok in ("repeated", "optional"):
                    repeated = tok == "repeated"
                    tok = self._next()
                assert tok != "map", "map fields are not supported by this parser"
                ftype, fname = tok, self._next()
                self._expect("=")
                number = int(self._next())
                self._skip_field_options()
                self._expect(";")
                fields[fname] = (number, (ftype, name), repeated, oneof)

    def _parse_enum(self, scope: str) -> None:
        name = self._full(scope, self._next())
        values: dict[str, int] = {}
        self.enums[name] = values
        self._expect("{")
        while True:
            tok = self._next()
            if tok == "}":
                break
            if tok == ";":
                continue
            if tok in ("option", "reserved"):
                self._skip_statement()
                continue
            self._expect("=")
            values[tok] = int(self._next())
            self._skip_field_options()
            self._expect(";")

    def _parse_service(self) -> None:
        name = self._full(self.package, self._next())
        rpcs: dict[str, tuple] = {}
        self.services[name] = rpcs
        self._expect("{")
        while True:
            tok = self._next()
            if tok == "}":
                break
            if tok == ";":
                continue
            if tok == "option":
                self._skip_statement()
                continue
            assert tok == "rpc", f"unexpected token {tok!r} in service {name}"
            rpc = self._next()
            sig = []
            for _ in range(2):
                self._expect("(")
                stream = self._peek() == "stream"
                if stream:
                    self._next()
                sig.append((self._next(), stream))
                self._expect(")")
                if not sig[1:]:
                    self._expect("returns")
            if self._peek() == "{":
                self._skip_block()
            else:
                self._expect(";")
            (inp, cs), (outp, ss) = sig
            rpcs[rpc] = ((inp, self.package), (outp, self.package), cs, ss)


def resolve_types(files: list[ProtoFile]) -> None:
    """Replace (type name, scope) pairs by fully-qualified type names."""
    known = set()
    for f in files:
        known |= set(f.messages) | set(f.enums)

    def resolve(ref: tuple[str, str]) -> str:
        tname, scope = ref
        if tname in SCALARS:
            return tname
        tname = tname.lstrip(".")
        parts = scope.split(".") if scope else []
        for i in range(len(parts), -1, -1):
            cand = ".".join(parts[:i] + [tname])
            if cand in known:
                return cand
        return tname  # unknown (defined in a file we did not parse)

    for f in files:
        for fields in f.messages.values():
            for fname, (num, ref, rep, oneof) in list(fields.items()):
                fields[fname] = (num, resolve(ref), rep, oneof)
        for rpcs in f.services.values():
            for rpc, (inp, outp, cs, ss) in list(rpcs.items()):
                rpcs[rpc] = (resolve(inp), resolve(outp), cs, ss)


# ---------------------------------------------------------------------------
# Comparison against our descriptors
# ---------------------------------------------------------------------------

_TYPE_NAMES = {
    getattr(FieldDescriptor, "TYPE_" + s.upper()): s for s in SCALARS
}


def _our_type(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return field.message_type.full_name
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.full_name
    return _TYPE_NAMES[field.type]


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5 has is_repeated; older ones only label
    rep = getattr(field, "is_repeated", None)
    if rep is not None:
        return rep
    return field.label == FieldDescriptor.LABEL_REPEATED


def compare_with_ours(upstream: list[ProtoFile]) -> list[str]:
    """Everything upstream defines must be in ours, identically. Returns problems."""
    pool = etcdpb.POOL
    problems: list[str] = []
    for f in upstream:
        for mname, fields in f.messages.items():
            try:
                desc = pool.FindMessageTypeByName(mname)
            except KeyError:
                problems.append(f"missing message {mname}")
                continue
            for fname, (num, ftype, rep, oneof) in fields.items():
                ours = desc.fields_by_name.get(fname)
                if ours is None:
                    problems.append(f"{mname}.{fname}: missing field (#{num} {ftype})")
                    continue
                got = (
                    ours.number,
                    _our_type(ours),
                    _is_repeated(ours),
                    ours.containing_oneof.name if ours.containing_oneof else None,
                )
                want = (num, ftype, rep, oneof)
                if got != want:
                    problems.append(
                        f"{mname}.{fname}: ours (number, type, repeated, oneof)={got}, etcd={want}"
                    )
        for ename, values in f.enums.items():
            try:
                edesc = pool.FindEnumTypeByName(ename)
            except KeyError:
                problems.append(f"missing enum {ename}")
                continue
            for vname, vnum in values.items():
                v = edesc.values_by_name.get(vname)
                if v is None or v.number != vnum:
                    problems.append(f"enum {ename}.{vname}: etcd={vnum}, ours={v and v.number}")
        for sname, rpcs in f.services.items():
            try:
                sdesc = pool.FindServiceByName(sname)
            except KeyError:
                problems.append(f"missing service {sname}")
                continue
            for rpc, want in rpcs.items():
                m = sdesc.methods_by_name.get(rpc)
                if m is None:
                    problems.append(f"{sname}.{rpc}: missing rpc")
                    continue
                got = (
                    m.input_type.full_name,
                    m.output_type.full_name,
                    m.client_streaming,
                    m.server_streaming,
                )
                if got != want:
                    problems.append(f"{sname}.{rpc}: ours={got}, etcd={want}")
    return problems


# ---------------------------------------------------------------------------
# Against etcd's own files
# ---------------------------------------------------------------------------

ETCD_FILES = {  # our file -> (etcd's file name, directory it sits in)
    "rpc": ("rpc.proto", "etcdserverpb"),
    "kv": ("kv.proto", "mvccpb"),
    "auth": ("auth.proto", "authpb"),
}
SEARCH_ROOTS = [
    Path("/usr/share/gocode/src/go.etcd.io/etcd"),  # Debian golang-etcd-server-dev
    Path(os.environ.get("GOMODCACHE", Path.home() / "go" / "pkg" / "mod")) / "go.etcd.io" / "etcd",
]


def find_etcd_protos() -> dict[str, Path] | None:
    """One consistent set of etcd's rpc/kv/auth .proto files, or None."""
    explicit = os.environ.get("ETCD_PROTO_DIR")
    roots = [Path(explicit)] if explicit else SEARCH_ROOTS
    for root in roots:
        if not root.is_dir():
            continue
        found = {}
        for key, (fname, dirname) in ETCD_FILES.items():
            hits = sorted(root.glob(f"**/{dirname}/{fname}"))
            if hits:
                found[key] = hits[-1]  # newest-sorting version directory, if several
        if len(found) == len(ETCD_FILES):
            return found
    return None


ETCD_PROTOS = find_etcd_protos()


@pytest.mark.skipif(
    ETCD_PROTOS is None,
    reason="etcd's own .proto files not found (apt-get install golang-etcd-server-dev, "
    "or set ETCD_PROTO_DIR to a directory holding etcdserverpb/rpc.proto, "
    "mvccpb/kv.proto and authpb/auth.proto)",
)
def test_matches_etcd_upstream_protos():
    files = [ProtoFile(p.read_text(encoding="utf-8")) for p in ETCD_PROTOS.values()]
    resolve_types(files)
    # Sanity-check the parser on what it read.
    by_pkg = {f.package: f for f in files}
    assert set(by_pkg) == {"etcdserverpb", "mvccpb", "authpb"}
    rpc = by_pkg["etcdserverpb"]
    assert len(rpc.messages) > 80 and len(rpc.services) == 6, ETCD_PROTOS["rpc"]
    assert rpc.messages["etcdserverpb.Compare"]["create_revision"] == (
        5, "int64", False, "target_union",
    )
    assert rpc.messages["etcdserverpb.WatchResponse"]["events"] == (
        11, "mvccpb.Event", True, None,
    )
    problems = compare_with_ours(files)
    assert not problems, f"differences from {ETCD_PROTOS}:\n" + "\n".join(problems)


# etcd 3.5 additions over 3.4 (Debian ships etcd 3.4 sources), written out so
# they are checked even where only 3.4's files are available.
ETCD_35_ADDITIONS = """
package etcdserverpb;
service Maintenance {
  rpc Downgrade(DowngradeRequest) returns (DowngradeResponse);
}
service Auth {
  rpc AuthStatus(AuthStatusRequest) returns (AuthStatusResponse);
}
message MemberListRequest { bool linearizable = 1; }
message DowngradeRequest {
  enum DowngradeAction { VALIDATE = 0; ENABLE = 1; CANCEL = 2; }
  DowngradeAction action = 1;
  string version = 2;
}
message DowngradeResponse { ResponseHeader header = 1; string version = 2; }
message AuthStatusRequest { }
message AuthStatusResponse { ResponseHeader header = 1; bool enabled = 2; uint64 authRevision = 3; }
message AuthUserAddRequest { string hashedPassword = 4; }
message AuthUserChangePasswordRequest { string hashedPassword = 3; }
message ResponseHeader { }
"""


def test_has_etcd_35_additions():
    f = ProtoFile(ETCD_35_ADDITIONS)
    resolve_types([f])
    problems = compare_with_ours([f])
    assert not problems, "\n".join(problems)


def test_parser_handles_etcd_syntax():
    """Options, http annotations, comments and oneofs as they appear in etcd's files."""
    text = """
    syntax = "proto3";
    package p;
    import "gogoproto/gogo.proto";
    option (gogoproto.marshaler_all) = true;
    option (x.y) = { a: { b: "c" } };  // aggregate option
    service S {
      /* block comment */
      rpc W(stream A) returns (stream B) {
        option (google.api.http) = { post: "/v3/w" body: "*" };
      }
      rpc R(A) returns (B) {}
      rpc Q(A) returns (stream B);
    }
    message A {
      option (m) = "3.0";
      enum E { option (e) = "3.0"; X = 0; Y = 1 [(v)="3.1"]; }
      E e = 1 [(f)="3.1"];
      repeated B bs = 2;
      oneof u { int64 i = 3; bytes s = 4; }
      message N { A.E e = 1; }
      N n = 64;
    };
    message B { A.N n = 1; }
    """
    f = ProtoFile(text)
    resolve_types([f])
    assert f.messages["p.A"] == {
        "e": (1, "p.A.E", False, None),
        "bs": (2, "p.B", True, None),
        "i": (3, "int64", False, "u"),
        "s": (4, "bytes", False, "u"),
        "n": (64, "p.A.N", False, None),
    }
    assert f.messages["p.A.N"] == {"e": (1, "p.A.E", False, None)}
    assert f.messages["p.B"] == {"n": (1, "p.A.N", False, None)}
    assert f.enums["p.A.E"] == {"X": 0, "Y": 1}
    assert f.services["p.S"] == {
        "W": ("p.A", "p.B", True, True),
        "R": ("p.A", "p.B", False, False),
        "Q": ("p.A", "p.B", False, True),
    }
