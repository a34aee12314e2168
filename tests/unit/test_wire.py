"""The zero-copy chunk decoder agrees with protobuf on every UploadRequest, and hands the
data out without copying it."""

from __future__ import annotations

import random

import pytest
from google.protobuf.message import DecodeError

from fleetcap.coordinator.fleet import wire
from fleetcap.v1 import fleet_pb2


def as_tuple(req):
    if req.HasField("chunk"):
        c = req.chunk
        return ("chunk", c.offset, bytes(c.data), c.crc32, c.crc32c if c.HasField("crc32c") else None)
    return ("other", req.SerializeToString())


@pytest.mark.parametrize("seed", range(200))
def test_chunks_decode_as_protobuf_does(seed):
    rnd = random.Random(seed)
    chunk = fleet_pb2.UploadChunk(
        offset=rnd.choice([0, 1, 127, 128, 2**31, 2**40, 2**63 - 1, -1]),
        data=rnd.randbytes(rnd.choice([0, 1, 127, 128, 300, 70000])),
        crc32=rnd.choice([0, 1, 2**31, 2**32 - 1]),
    )
    if rnd.random() < 0.5:  # agents with CRC-32C send it; older ones do not
        chunk.crc32c = rnd.choice([0, 1, 2**31, 2**32 - 1])
    raw = fleet_pb2.UploadRequest(chunk=chunk).SerializeToString()
    fast = wire.decode_upload_request(raw)
    assert isinstance(fast, wire.ChunkRequest)
    assert as_tuple(fast) == as_tuple(fleet_pb2.UploadRequest.FromString(raw))


def test_data_is_a_view_not_a_copy():
    raw = fleet_pb2.UploadRequest(chunk=fleet_pb2.UploadChunk(offset=5, data=b"x" * 4096, crc32=7)).SerializeToString()
    req = wire.decode_upload_request(raw)
    assert isinstance(req.chunk.data, memoryview)
    assert req.chunk.data.obj is raw


@pytest.mark.parametrize(
    "message",
    [
        fleet_pb2.UploadRequest(open=fleet_pb2.UploadOpen(capture_name="c", file_path="/var/captures/a.cap")),
        fleet_pb2.UploadRequest(finish=fleet_pb2.UploadFinish(size_bytes=10, sha256="ab")),
        fleet_pb2.UploadRequest(),
    ],
)
def test_other_bodies_go_to_protobuf(message):
    req = wire.decode_upload_request(message.SerializeToString())
    assert isinstance(req, fleet_pb2.UploadRequest)
    assert req == message


def test_fields_in_any_order_and_unknown_fields():
    # data before offset, as another encoder may write them
    inner = b"\x12\x03abc" + b"\x08\x2a" + b"\x18\x07"
    raw = b"\x12" + bytes([len(inner)]) + inner
    assert as_tuple(wire.decode_upload_request(raw)) == ("chunk", 42, b"abc", 7, None)
    # an unknown field inside the chunk: protobuf decodes it (and keeps the known ones)
    inner = b"\x08\x2a" + b"\x28\x01" + b"\x12\x01z"
    raw = b"\x12" + bytes([len(inner)]) + inner
    req = wire.decode_upload_request(raw)
    assert isinstance(req, fleet_pb2.UploadRequest)
    assert as_tuple(req) == ("chunk", 42, b"z", 0, None)


def test_truncated_input_is_protobufs_error():
    raw = fleet_pb2.UploadRequest(chunk=fleet_pb2.UploadChunk(offset=1, data=b"abcdef")).SerializeToString()
    with pytest.raises(DecodeError):
        wire.decode_upload_request(raw[:-2])


def test_chunks_are_checked_by_crc32c_or_by_an_older_agents_crc32():
    import zlib

    import google_crc32c

    from fleetcap.coordinator.fleet.uploads import _write_checked

    class Writer:
        def __init__(self) -> None:
            self.writes: list[tuple[int, bytes]] = []

        def write(self, offset: int, data) -> int:
            self.writes.append((offset, bytes(data)))
            return 0

    data = bytes(range(256)) * 40
    good_c, good = google_crc32c.value(data), zlib.crc32(data)
    w = Writer()
    view = wire.decode_upload_request(
        fleet_pb2.UploadRequest(chunk=fleet_pb2.UploadChunk(offset=0, data=data, crc32c=good_c)).SerializeToString()
    ).chunk
    assert _write_checked(w, 0, view.data, view)  # a view, as the decoder hands it out
    assert not _write_checked(w, 1, data, fleet_pb2.UploadChunk(crc32c=good_c ^ 1, crc32=good))  # CRC-32C wins
    assert _write_checked(w, 2, data, fleet_pb2.UploadChunk(crc32=good))  # an agent before CRC-32C
    assert not _write_checked(w, 3, data, fleet_pb2.UploadChunk(crc32=good ^ 1))
    assert w.writes == [(0, data), (2, data)]  # nothing written on a mismatch
