"""Damage a checkpoint file the way a disk, a file server or a copy does: one byte of a tensor's
data changed, the rest of the file (its zip records, its pickle) as it was."""

import struct
import zipfile
from pathlib import Path

# A zip local file header: 30 bytes, then the file name and the extra field, then the data.
LOCAL_HEADER = 30


def tensor_data_offset(path: Path) -> tuple[int, int]:
    """``(offset, size)`` in the file of the largest tensor storage's bytes: the data of the zip
    record ``<archive>/data/<key>`` that ``torch.save`` wrote, past its local header."""
    with zipfile.ZipFile(path) as archive:
        record = max(
            (info for info in archive.infolist() if "/data/" in info.filename),
            key=lambda info: info.file_size,
        )
        assert record.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as f:
        f.seek(record.header_offset)
        header = f.read(LOCAL_HEADER)
    assert header[:4] == b"PK\x03\x04"
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return record.header_offset + LOCAL_HEADER + name_length + extra_length, record.file_size


def flip_a_tensor_byte(path: Path) -> int:
    """Flip the lowest bit of the middle byte of the largest tensor's data in the checkpoint at
    ``path``, in place (the size, and every zip header, stay); returns its offset."""
    offset, size = tensor_data_offset(path)
    offset += size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))
    return offset
