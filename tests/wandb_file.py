"""Reader for W&B's offline ``.wandb`` run file (the test oracle for the W&B logs).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version),
then 32 KiB blocks of chunks, each with a 7-byte header (CRC32, length, type:
1 full, 2 first, 3 middle, 4 last). Reassembled payloads are protobuf ``Record``
messages from ``wandb.proto``.
"""
import struct
import zlib

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7


def records(path):
    """Yield every ``Record`` in the file, checking each chunk's CRC."""
    data = open(path, "rb").read()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, "not a W&B run file"
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too short for a header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        payload = data[pos + HEADER : pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF == crc, "bad chunk checksum"
        pos += HEADER + length
        parts.append(payload)
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            parts = []
            yield rec


def history(path):
    """The logged history rows as dicts of key -> JSON text."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): item.value_json
                         for item in rec.history.item})
    return rows
