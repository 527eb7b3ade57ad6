"""Several brain processes over one shared engine (TiKV), KubeBrain-style:
one leader elected through the engine commits, the other members serve
reads and watches and forward writes to it.

- election.py: the leader's lease record and the fencing term.
- follower.py: a follower's store follows the engine's revision log.
- forward.py: the calls that write, proxied to the leader.
- members.py: heartbeat records, for MemberList.
- node.py: ClusterNode, the roles put together.
"""
from __future__ import annotations

from brain.cluster.members import MemberRecord
from brain.cluster.node import ClusterNode, ClusterSettings, channel_credentials

__all__ = ["ClusterNode", "ClusterSettings", "MemberRecord", "channel_credentials"]
