"""A sans-IO HTTP/2 server connection (RFC 7540): bytes in, events and
bytes out. Nothing here knows of sockets, event loops or gRPC; the asyncio
adapter (brain.transport.protocol) feeds it socket bytes and writes what it
produces, and the gRPC layer (brain.transport.dispatch) acts on its events."""
