"""Zero-copy decoding of the data path's chunks.

protobuf hands out a chunk's `data` as a new bytes object on every access: one more 4 MiB copy
per chunk on the coordinator, whose CPU bounds the data path (docs/benchmarks.md). An
UploadRequest that is a chunk is decoded here instead, with `data` a memoryview into the
message gRPC received. Anything else, or a chunk with a field this decoder does not know, goes
to protobuf, so the wire contract stays protobuf's.
"""

from __future__ import annotations

from fleetcap.v1 import fleet_pb2

_CHUNK_TAG = (2 << 3) | 2  # UploadRequest.chunk: field 2, length-delimited


class ChunkView:
    __slots__ = ("offset", "data", "crc32", "_crc32c")

    def __init__(self, offset: int, data: memoryview, crc32: int, crc32c: int | None = None):
        self.offset, self.data, self.crc32, self._crc32c = offset, data, crc32, crc32c

    @property
    def crc32c(self) -> int:
        return self._crc32c or 0

    def HasField(self, name: str) -> bool:  # noqa: N802 (protobuf's name)
        return name == "crc32c" and self._crc32c is not None


class ChunkRequest:
    """Quacks like an UploadRequest whose body is a chunk."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: ChunkView):
        self.chunk = chunk

    def HasField(self, name: str) -> bool:  # noqa: N802 (protobuf's name)
        return name == "chunk"


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _chunk(buf: memoryview) -> ChunkRequest | None:
    """The chunk in an UploadRequest's bytes, or None to let protobuf decode it."""
    if len(buf) < 2 or buf[0] != _CHUNK_TAG:
        return None
    length, pos = _varint(buf, 1)
    if pos + length != len(buf):
        return None  # more than the one field: protobuf knows what to do
    offset, data, crc32, end = 0, buf[0:0], 0, len(buf)
    crc32c: int | None = None
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field in (1, 3, 4) and wire_type == 0:
            value, pos = _varint(buf, pos)
            if field == 1:
                offset = value - (1 << 64) if value >= 1 << 63 else value  # int64
            elif field == 3:
                crc32 = value & 0xFFFFFFFF  # uint32
            else:
                crc32c = value & 0xFFFFFFFF
        elif field == 2 and wire_type == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise ValueError("truncated bytes field")
            data, pos = buf[pos : pos + n], pos + n
        else:
            return None
    return ChunkRequest(ChunkView(offset, data, crc32, crc32c))


def decode_upload_request(raw: bytes) -> fleet_pb2.UploadRequest | ChunkRequest:
    try:
        fast = _chunk(memoryview(raw))
    except ValueError:
        fast = None  # malformed: protobuf raises its own error for it
    return fast if fast is not None else fleet_pb2.UploadRequest.FromString(raw)
