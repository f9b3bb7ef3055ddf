"""The PLY header: its type names, the elements and properties it declares, and its parser.

A PLY file starts with a text header (``ply``, one ``format`` line, ``element <name> <count>``
lines each followed by its ``property <type> <name>`` or ``property list <count type> <item
type> <name>`` lines, ``end_header``); the data follow it (ASCII or binary), read by
:mod:`register.io.ply`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from register.io._common import fail, header_count

_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_DTYPES = {name: np.dtype(code) for name, code in _TYPES.items()}
_BYTE_ORDERS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_END_HEADER = re.compile(rb"^end_header[ \t]*(\r?\n|$)", re.MULTILINE)
_HEADER_FIX = "Fix or re-export the file"


@dataclass(frozen=True)
class Property:
    """One property: scalar (``count_dtype is None``) or list of ``dtype`` items."""

    name: str
    dtype: np.dtype
    count_dtype: np.dtype | None = None


@dataclass(frozen=True)
class Element:
    """One element: its name, its record count and its properties in record order."""

    name: str
    count: int
    properties: tuple[Property, ...]


@dataclass(frozen=True)
class Header:
    """The parsed header: the byte order, the elements in file order and where the data start."""

    byte_order: str | None  # None for ASCII
    elements: tuple[Element, ...]
    body_start: int  # byte offset of the data
    n_lines: int  # header lines, for line numbers in ASCII messages


def parse_header(data: bytes, path: Path) -> Header:
    """Parse the text header up to ``end_header``."""
    if not data.startswith(b"ply"):
        raise fail(
            path, "not a PLY file (it does not start with 'ply')", "Check the file type and its extension"
        )
    end = _END_HEADER.search(data)
    if end is None:
        raise fail(path, "the PLY header has no 'end_header' line", "The file is truncated or not a PLY file")
    lines = data[: end.start()].decode("ascii", errors="replace").splitlines()
    formats: list[str] = []
    elements: list[tuple[str, int, list[Property]]] = []
    element_names: set[str] = set()
    names: set[str] = set()  # of the current element's properties
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2 and words[1] in _BYTE_ORDERS:
            formats.append(words[1])
        elif words[0] == "element" and len(words) == 3:
            if words[1] in element_names:
                raise fail(path, f"the PLY header declares element '{words[1]}' twice", _HEADER_FIX)
            element_names.add(words[1])
            count = header_count(path, words[2], f"the record count of element '{words[1]}'")
            elements.append((words[1], count, []))
            names = set()
        elif words[0] == "property" and elements:
            prop = _parse_property(words, path, number)
            if prop.name in names:
                raise fail(
                    path,
                    f"the PLY element '{elements[-1][0]}' declares property '{prop.name}' twice",
                    _HEADER_FIX,
                )
            names.add(prop.name)
            elements[-1][2].append(prop)
        else:
            raise fail(path, f"bad PLY header line {number}: {line!r}", "Fix or re-export the file")
    if len(formats) != 1:
        raise fail(path, "the PLY header needs exactly one valid 'format' line", "Fix or re-export the file")
    for name, count, properties in elements:
        if count and not properties:
            raise fail(path, f"the PLY element '{name}' has {count} records but no properties", _HEADER_FIX)
    return Header(
        _BYTE_ORDERS[formats[0]],
        tuple(Element(name, count, tuple(props)) for name, count, props in elements),
        end.end(),
        len(lines) + 1,
    )


def _parse_property(words: list[str], path: Path, number: int) -> Property:
    """``property <type> <name>`` or ``property list <count type> <item type> <name>``."""
    if len(words) == 3 and words[1] in _DTYPES:
        return Property(words[2], _DTYPES[words[1]])
    if len(words) == 5 and words[1] == "list" and words[2] in _DTYPES and words[3] in _DTYPES:
        if _DTYPES[words[2]].kind not in "iu":
            raise fail(
                path, f"the PLY list length type on header line {number} is not an integer type", _HEADER_FIX
            )
        return Property(words[4], _DTYPES[words[3]], _DTYPES[words[2]])
    raise fail(
        path, f"bad PLY property on header line {number}: {' '.join(words)!r}", "Fix or re-export the file"
    )
