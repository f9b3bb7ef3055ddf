"""A cursor over a legacy VTK file: keyword lines, then ASCII values or big-endian binary blocks.

:mod:`register.io.vtk_legacy` parses the sections with it. Every count is checked against the
bytes left before anything is allocated: a binary value takes its type's size, an ASCII value
at least 2 bytes (a digit and a separator), a string at least 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from register.io._common import cast_values, check_bytes, check_tokens, fail, truncated

# legacy VTK data type names -> numpy type codes
TYPES = {
    "unsigned_char": "u1",
    "char": "i1",
    "signed_char": "i1",
    "unsigned_short": "u2",
    "short": "i2",
    "unsigned_int": "u4",
    "int": "i4",
    "unsigned_long": "u8",
    "long": "i8",
    "unsigned_long_long": "u8",
    "long_long": "i8",
    "vtktypeint64": "i8",
    "vtktypeuint64": "u8",
    "vtkidtype": "i4",  # the legacy writer stores vtkIdType as 32-bit int
    "float": "f4",
    "double": "f8",
}
FIX = "Re-export the file from the tool that made it (as binary POLYDATA, or as .vtp)"


class Cursor:
    """Walks a legacy VTK file: keyword lines, then ASCII values or big-endian binary blocks."""

    def __init__(self, data: bytes, pos: int, binary: bool, path: Path) -> None:
        self.data = data
        self.pos = pos
        self.binary = binary
        self.path = path

    def raw_line(self) -> str:
        """The next line, stripped (blank or not)."""
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end
        text = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return text.strip()

    def line(self) -> list[str] | None:
        """Words of the next non-blank line, or ``None`` at the end of the file."""
        while self.pos < len(self.data):
            words = self.raw_line().split()
            if words:
                return words
        return None

    def peek(self) -> str | None:
        """First word of the next non-blank line (upper case), without consuming it."""
        pos = self.pos
        words = self.line()
        self.pos = pos
        return words[0].upper() if words else None

    def skip_block(self) -> None:
        """Skip lines up to the next blank line (a ``METADATA`` block)."""
        while self.pos < len(self.data) and self.raw_line():
            pass

    @property
    def left(self) -> int:
        """Bytes left after the cursor."""
        return len(self.data) - self.pos

    def values(self, count: int, type_name: str, what: str) -> np.ndarray:
        """Read ``count`` numbers of VTK type ``type_name`` as a native-order ``(count,)`` array.

        ``count`` is checked against the bytes left before anything is allocated: binary values
        take ``itemsize`` bytes each, ASCII values at least 2 (a digit and a separator).
        """
        code = TYPES.get(type_name.lower())
        if code is None:
            raise fail(self.path, f"the {what} section has unsupported data type '{type_name}'", FIX)
        if self.binary:
            return self._binary_values(count, np.dtype(">" + code), what)
        return self._ascii_values(count, np.dtype(code), what)

    def _binary_values(self, count: int, dtype: np.dtype, what: str) -> np.ndarray:
        nbytes = count * dtype.itemsize
        check_bytes(self.path, nbytes, self.left, f"the {what} section declares {count} values")
        arr = np.frombuffer(self.data, dtype, count, self.pos).astype(dtype.newbyteorder("="))
        self.pos += nbytes
        return arr

    def _ascii_values(self, count: int, dtype: np.dtype, what: str) -> np.ndarray:
        check_tokens(self.path, count, self.left, f"the {what} section declares")
        tokens: list[bytes] = []
        while len(tokens) < count:
            if self.pos >= len(self.data):
                raise truncated(
                    self.path,
                    f"the {what} section declares {count} values but the file ends after {len(tokens)}",
                )
            end = self.data.find(b"\n", self.pos)
            end = len(self.data) if end < 0 else end
            tokens.extend(self.data[self.pos : end].split())
            self.pos = end + 1
        if len(tokens) != count:
            raise fail(
                self.path, f"the {what} section has {len(tokens)} values on its lines, not {count}", FIX
            )
        try:
            values = np.array(tokens, dtype=np.float64 if dtype.kind == "f" else np.int64)
        except (ValueError, OverflowError):
            raise truncated(
                self.path, f"the {what} section has fewer values than declared or a non-number"
            ) from None
        return cast_values(values, dtype, self.path, f"the {what} section")

    def skip_strings(self, count: int, what: str) -> None:
        """Skip the ``count`` strings of a string array (one line each in ASCII files).

        Every string takes at least one byte (its newline, or its binary length prefix), so a
        count larger than the bytes left is refused at once; the loop stops at the end of file.
        """
        if count > self.left + 1:
            raise truncated(
                self.path,
                f"the {what} string array declares {count} strings but only {self.left} bytes follow",
            )
        for done in range(count):
            if self.pos >= len(self.data):
                raise truncated(self.path, f"the {what} string array ends after {done} of {count} strings")
            if not self.binary:
                self.raw_line()
                continue
            length = self._string_length(what)
            check_bytes(self.path, length, self.left, f"string {done} of the {what} array declares")
            self.pos += length

    def _string_length(self, what: str) -> int:
        """Length prefix of a binary string: the top 2 bits of the first byte give its width."""
        width = {3: 1, 2: 2, 1: 4, 0: 8}[self.data[self.pos] >> 6]
        raw = self.data[self.pos : self.pos + width]
        if len(raw) < width:
            raise truncated(self.path, f"the {what} string array ends early")
        self.pos += width
        mask = (1 << (8 * width - 2)) - 1 if width < 8 else (1 << 64) - 1
        return int.from_bytes(raw, "big") & mask
