"""The frames between the SQLite store and its writer process (bridge/store/sqlite_frames.py)."""

from __future__ import annotations


def test_the_writer_reads_every_frame_that_has_arrived_and_then_the_end() -> None:
    import pickle
    import socket
    import struct
    import threading

    from bridge.store.sqlite_frames import FrameReader

    ours, theirs = socket.socketpair()
    reader = FrameReader(theirs)
    assert reader.read_available(wait=False) == []  # nothing yet: no waiting

    def frame(obj: object) -> bytes:
        data = pickle.dumps(obj)
        return struct.pack(">I", len(data)) + data

    ours.sendall(frame(1) + frame("two") + frame(3)[:3])  # the third is cut short
    assert reader.read_available(wait=True) == [1, "two"]
    # Waiting: the rest of the third frame arrives later, from another thread.
    later = threading.Timer(0.05, ours.sendall, (frame(3)[3:] + frame(4),))
    later.start()
    assert reader.read_available(wait=True) == [3, 4]
    later.join()
    ours.sendall(frame(5))
    ours.close()
    assert reader.read_available(wait=True) == [5]
    assert reader.read_available(wait=True) is None  # the end, and nothing left
    theirs.close()
