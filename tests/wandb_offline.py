"""Reads back an offline W&B run (``wandb/offline-run-*/run-*.wandb``) without the network or the W&B service.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic, version), then LevelDB-log records in 32 KiB
blocks (4-byte CRC, 2-byte length, 1-byte type: full / first / middle / last), each a ``Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK, _HEADER = 32768, 7


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    pos, out, partial = _HEADER, [], b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk, pos = data[pos + _HEADER:pos + _HEADER + length], pos + _HEADER + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            out.append(partial + chunk)
    parsed = []
    for raw in out:
        rec = pb.Record()
        rec.ParseFromString(raw)
        parsed.append(rec)
    return parsed


def run_summary(path: Path) -> dict:
    """group, display name, config (key -> decoded value, later updates win) and the logged keys of one run."""
    info = {"group": None, "name": None, "config": {}, "keys": set()}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            info["group"], info["name"] = rec.run.run_group, rec.run.display_name
            info["config"].update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            info["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "history":
            info["keys"] |= {item.key or "/".join(item.nested_key) for item in rec.history.item}
    return info
