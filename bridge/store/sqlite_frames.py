"""The SQLite writer's channel: frames between the store and its writer process.

Protocol, over a socketpair: frames of a 4-byte big-endian length and a pickle.
Parent to child: ``(request_id, op_name, args)`` (``ingest``, ``ingest_body``
or a name from :data:`bridge.store.sqlite_writes.OPS`). Child to parent: first ``("ready",
pid)`` or ``("failed", message)``, then, per commit, a list of ``(request_id,
result, error)`` with errors as ``(unavailable, message)``. When the parent
closes its end (or dies) the child commits what it has received and exits.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

# Frames, and bytes, taken from the socket at a time at most (about: reading
# stops once either is reached); the rest waits in the socket.
MAX_FRAMES = 2000
MAX_READ_BYTES = 8 << 20

HEADER = struct.Struct(">I")

Request = tuple[int, str, tuple[Any, ...]]
Answer = tuple[int, Any, tuple[bool, str] | None]  # error: (unavailable, message)


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(HEADER.pack(len(data)) + data)


def take_frames(buffer: bytearray) -> list[Any]:
    """Remove and return the complete frames at the start of ``buffer``."""
    frames, pos = [], 0
    while len(buffer) - pos >= 4:
        (size,) = HEADER.unpack_from(buffer, pos)
        if len(buffer) - pos - 4 < size:
            break
        # A private socketpair between this process and its own child.
        frames.append(pickle.loads(buffer[pos + 4 : pos + 4 + size]))  # noqa: S301
        pos += 4 + size
    if pos:
        del buffer[:pos]
    return frames


class FrameReader:
    """Reads length-prefixed pickles from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def read(self) -> list[Any] | None:
        """At least one frame (all complete ones received), or None at end of stream."""
        while not (frames := take_frames(self.buffer)):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        return frames

    def read_available(self, wait: bool) -> list[Any] | None:
        """The complete frames that have arrived (up to about MAX_FRAMES or
        MAX_READ_BYTES), waiting for one first if ``wait``; None once the
        stream has ended and no frame is left."""
        frames: list[Any] = []
        read = 0
        while len(frames) < MAX_FRAMES and read < MAX_READ_BYTES:
            try:
                chunk = self.sock.recv(1 << 20, 0 if wait and not frames else socket.MSG_DONTWAIT)
            except BlockingIOError:
                return frames
            if not chunk:
                return frames or None
            read += len(chunk)
            self.buffer += chunk
            frames += take_frames(self.buffer)
        return frames
