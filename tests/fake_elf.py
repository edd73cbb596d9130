"""Small ELF files made to order: the symbols, libraries and header counts a test wants.

One loadable segment maps the whole file at address 0, so a symbol's address is its offset.
Sections: the null one, ``.dynstr``, ``.dynsym`` and ``.dynamic``. Any declared count or size
can be overridden to lie about the file (the hostile inputs of the services watcher).
"""

from __future__ import annotations

import struct
from typing import Mapping, Optional, Sequence

PY_VERSION = "Py_Version"


def py_version(major: int, minor: int, micro: int = 0, order: str = "<", bits: int = 64) -> bytes:
    """``Py_Version`` as CPython stores it: an unsigned long of PY_VERSION_HEX, final release."""
    return struct.pack(order + ("Q" if bits == 64 else "I"), major << 24 | minor << 16 | micro << 8 | 0xF0)


def interpreter(major: int, minor: int, micro: int = 0, free_threaded: bool = False) -> dict[str, bytes]:
    """The symbols a CPython interpreter binary of that version and build defines."""
    symbols = {"Py_Initialize": b"", "PyList_New": b""}
    if (major, minor) >= (3, 11):
        symbols[PY_VERSION] = py_version(major, minor, micro)
    if free_threaded:
        symbols["_Py_DecRefShared"] = b""
    return symbols


def elf_file(defined: Mapping[str, bytes] = {}, undefined: Sequence[str] = (), needed: Sequence[str] = (),
             bits: int = 64, big_endian: bool = False, banner: bytes = b"",
             symbol_table_bytes: Optional[int] = None, section_count: Optional[int] = None,
             segment_count: Optional[int] = None, string_table_bytes: Optional[int] = None) -> bytes:
    """An ELF file whose dynamic symbols define ``defined`` (name -> the bytes at its address,
    b"" for a function) and import ``undefined``; the overrides make its headers lie."""
    order = ">" if big_endian else "<"
    wide = bits == 64
    strings = bytearray(b"\0")
    offsets = {}
    for name in [*defined, *undefined, *needed]:
        offsets[name] = len(strings)
        strings += name.encode() + b"\0"
    header_size, segment_size = (64, 56) if wide else (52, 32)
    data = bytearray()
    data_at = header_size + segment_size
    values = {}
    for name, value in defined.items():
        values[name] = data_at + len(data)
        data += value
    data += banner
    strtab_at = data_at + len(data)
    symbol_entry = "I2xHQQ" if wide else "III2xH"
    symbols = bytearray(struct.pack(order + symbol_entry, *(0, 0, 0, 0) if wide else (0, 0, 0, 0)))
    for name in [*defined, *undefined]:
        section = 1 if name in defined else 0
        address, size = values.get(name, 0), len(defined.get(name, b""))
        fields = (offsets[name], section, address, size) if wide else (offsets[name], address, size, section)
        symbols += struct.pack(order + symbol_entry, *fields)
    symtab_at = strtab_at + len(strings)
    dynamic_entry = "qQ" if wide else "iI"
    dynamic = b"".join(struct.pack(order + dynamic_entry, 1, offsets[name]) for name in needed)
    dynamic += struct.pack(order + dynamic_entry, 0, 0)
    dynamic_at = symtab_at + len(symbols)
    sections_at = dynamic_at + len(dynamic)
    section_entry = "IIQQQQIIQQ" if wide else "IIIIIIIIII"
    section_headers = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (0, 3, 0, 0, strtab_at, string_table_bytes if string_table_bytes is not None else len(strings), 0, 0, 1, 0),
        (0, 11, 0, 0, symtab_at, symbol_table_bytes if symbol_table_bytes is not None else len(symbols), 1, 1, 8,
         struct.calcsize(order + symbol_entry)),
        (0, 6, 0, 0, dynamic_at, len(dynamic), 1, 0, 8, struct.calcsize(order + dynamic_entry)),
    ]
    sections = b"".join(struct.pack(order + section_entry, *h) for h in section_headers)
    total = sections_at + len(sections)
    segment = (struct.pack(order + "IIQQQQQQ", 1, 5, 0, 0, 0, total, total, 4096) if wide
               else struct.pack(order + "IIIIIIII", 1, 0, 0, 0, total, total, 5, 4096))
    ident = b"\x7fELF" + bytes([2 if wide else 1, 2 if big_endian else 1, 1]) + bytes(9)
    counts = (segment_count if segment_count is not None else 1, struct.calcsize(order + section_entry),
              section_count if section_count is not None else len(section_headers), 0)
    if wide:
        header = ident + struct.pack(order + "HHIQQQIHHHHHH", 3, 62, 1, 0, header_size, sections_at, 0, header_size,
                                     segment_size, counts[0], counts[1], counts[2], counts[3])
    else:
        header = ident + struct.pack(order + "HHIIIIIHHHHHH", 3, 3, 1, 0, header_size, sections_at, 0, header_size,
                                     segment_size, counts[0], counts[1], counts[2], counts[3])
    return header + segment + bytes(data) + bytes(strings) + bytes(symbols) + dynamic + sections
