"""Watch: the fan-out of commits to watchers (etcd's watchable store).

- hub.py: WatchHub, fed once per commit by the store; the synced watchers.
- stream.py: WatchStream, the watches of one gRPC stream, and catching up
  the ones that are behind.
- watcher.py, watcher_group.py: watchers and their key-range index.
- history.py: recent events in memory; replay.py: older ones from the engine.
- event.py, response.py, fanout.py, outbox.py: encoding events once,
  sharing the bytes, and queueing responses per stream.
"""
from __future__ import annotations

from brain.watch.hub import WatchHub
from brain.watch.stream import WatchStream
from brain.watch.watcher import Watcher, WatcherState

__all__ = ["WatchHub", "WatchStream", "Watcher", "WatcherState"]
