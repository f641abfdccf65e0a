"""Write a PNG band by band, so an image never has to exist whole in memory.

A 16384 x 16384 RGB image is 805 MB of raw bytes; Pillow can only save an image it holds. This
writer emits the PNG chunks itself (PNG specification, ISO/IEC 15948): the signature, ``IHDR``, a
stream of ``IDAT`` chunks fed by one incremental zlib compressor as rows arrive, and ``IEND``. Rows
use PNG filter type 1 ("Sub": each byte minus the byte of the pixel to its left), which costs one
vectorised subtraction and compresses smooth images far better than no filter.

The file appears under its name only when complete (written beside it, renamed on ``close``).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

__all__ = ["PngWriter"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class PngWriter:
    """Stream an 8-bit image of known size into a PNG file, top to bottom.

    Args:
        path: output file.
        width: image width in pixels.
        height: image height in pixels.
        channels: 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
        compress_level: zlib level 0-9 (Pillow's default is 6).
        chunk_bytes: compressed bytes per ``IDAT`` chunk.

    Use as a context manager; ``write(rows)`` takes uint8 rows [n, width, channels] (NumPy or torch).
    """

    def __init__(self, path: Union[str, os.PathLike], width: int, height: int, *, channels: int = 3,
                 compress_level: int = 6, chunk_bytes: int = 1 << 20):
        if channels not in _COLOR_TYPES:
            raise ValueError(f"PNG channels must be 1, 2, 3 or 4, got {channels}")
        if not (0 < width < 2 ** 31 and 0 < height < 2 ** 31):
            raise ValueError(f"PNG sides must be in 1..2^31-1, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height, self.channels = width, height, channels
        self.rows_written = 0
        self._chunk_bytes = chunk_bytes
        self._pending = bytearray()
        self._compressor = zlib.compressobj(compress_level)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.part")
        self._file: Optional[object] = open(self._tmp, "wb")
        header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
        self._file.write(_SIGNATURE + _chunk(b"IHDR", header))

    def write(self, rows: Union[np.ndarray, torch.Tensor]) -> None:
        """Append rows [n, width, channels] (uint8) below the ones already written."""
        if self._file is None:
            raise RuntimeError(f"{self.path} is already closed")
        if isinstance(rows, torch.Tensor):
            rows = rows.detach().cpu().numpy()
        if rows.dtype != np.uint8 or rows.ndim != 3 or rows.shape[1:] != (self.width, self.channels):
            raise ValueError(f"expected uint8 rows [n, {self.width}, {self.channels}], got {rows.dtype} {rows.shape}")
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError(f"{self.rows_written} + {rows.shape[0]} rows exceed the image height {self.height}")
        if rows.shape[0] == 0:
            return
        flat = np.ascontiguousarray(rows).reshape(rows.shape[0], -1)
        filtered = np.empty((flat.shape[0], flat.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = 1  # filter type Sub
        filtered[:, 1:self.channels + 1] = flat[:, :self.channels]
        np.subtract(flat[:, self.channels:], flat[:, :-self.channels], out=filtered[:, self.channels + 1:])
        self._pending += self._compressor.compress(filtered.tobytes())
        self.rows_written += rows.shape[0]
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while len(self._pending) >= self._chunk_bytes or (final and self._pending):
            size = min(len(self._pending), self._chunk_bytes)
            self._file.write(_chunk(b"IDAT", bytes(self._pending[:size])))
            del self._pending[:size]

    def close(self) -> Path:
        """Finish the file (all ``height`` rows must have been written) and move it into place."""
        if self._file is None:
            return self.path
        if self.rows_written != self.height:
            self.abort()
            raise ValueError(f"{self.path}: wrote {self.rows_written} of {self.height} rows; file discarded")
        self._pending += self._compressor.flush()
        self._flush(final=True)
        self._file.write(_chunk(b"IEND", b""))
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
