"""The zero-copy chunk decoder agrees with protobuf on every UploadRequest, and hands the
data out without copying it."""
from __future__ import annotations

import random

import pytest

from fleetcap.coordinator.fleet import wire
from fleetcap.v1 import fleet_pb2


def as_tuple(req):
    if req.HasField("chunk"):
        c = req.chunk
        return ("chunk", c.offset, bytes(c.data), c.crc32)
    return ("other", req.SerializeToString())


@pytest.mark.parametrize("seed", range(200))
def test_chunks_decode_as_protobuf_does(seed):
    rnd = random.Random(seed)
    chunk = fleet_pb2.UploadChunk(offset=rnd.choice([0, 1, 127, 128, 2**31, 2**40, 2**63 - 1, -1]),
                                  data=rnd.randbytes(rnd.choice([0, 1, 127, 128, 300, 70000])),
                                  crc32=rnd.choice([0, 1, 2**31, 2**32 - 1]))
    raw = fleet_pb2.UploadRequest(chunk=chunk).SerializeToString()
    fast = wire.decode_upload_request(raw)
    assert isinstance(fast, wire.ChunkRequest)
    assert as_tuple(fast) == as_tuple(fleet_pb2.UploadRequest.FromString(raw))


def test_data_is_a_view_not_a_copy():
    raw = fleet_pb2.UploadRequest(chunk=fleet_pb2.UploadChunk(offset=5, data=b"x" * 4096, crc32=7)).SerializeToString()
    req = wire.decode_upload_request(raw)
    assert isinstance(req.chunk.data, memoryview) and req.chunk.data.obj is raw


@pytest.mark.parametrize("message", [
    fleet_pb2.UploadRequest(open=fleet_pb2.UploadOpen(capture_name="c", file_path="/var/captures/a.cap")),
    fleet_pb2.UploadRequest(finish=fleet_pb2.UploadFinish(size_bytes=10, sha256="ab")),
    fleet_pb2.UploadRequest(),
])
def test_other_bodies_go_to_protobuf(message):
    req = wire.decode_upload_request(message.SerializeToString())
    assert isinstance(req, fleet_pb2.UploadRequest) and req == message


def test_fields_in_any_order_and_unknown_fields():
    # data before offset, as another encoder may write them
    inner = b"\x12\x03abc" + b"\x08\x2a" + b"\x18\x07"
    raw = b"\x12" + bytes([len(inner)]) + inner
    assert as_tuple(wire.decode_upload_request(raw)) == ("chunk", 42, b"abc", 7)
    # an unknown field inside the chunk: protobuf decodes it (and keeps the known ones)
    inner = b"\x08\x2a" + b"\x20\x01" + b"\x12\x01z"
    raw = b"\x12" + bytes([len(inner)]) + inner
    req = wire.decode_upload_request(raw)
    assert isinstance(req, fleet_pb2.UploadRequest) and as_tuple(req) == ("chunk", 42, b"z", 0)


def test_truncated_input_is_protobufs_error():
    raw = fleet_pb2.UploadRequest(chunk=fleet_pb2.UploadChunk(offset=1, data=b"abcdef")).SerializeToString()
    with pytest.raises(Exception) as e:
        wire.decode_upload_request(raw[:-2])
    assert type(e.value).__name__ == "DecodeError"
