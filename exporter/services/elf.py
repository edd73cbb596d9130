"""The few facts of an ELF file that say which Python it holds, read with a cap on every count.

The file is another user's (a watched process maps it), so every count, size and offset its
headers declare is checked against the file's size and a cap before a byte is read, and
every read goes through ``procfs.UntrustedFile`` (a byte budget and a deadline). Only what
the identity needs is read: which of a few names the dynamic symbol table *defines*, the
bytes of one data symbol (``Py_Version``), and the libraries the file needs (``DT_NEEDED``).
A general ELF library walks whatever the file declares (200 million symbols, if it says so);
this reader declines anything beyond what a real interpreter binary needs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Optional

from exporter.host.procfs import Refused, UntrustedFile

# Caps, each well above what the largest interpreter binary declares (python3.13t: 43
# sections, 14 segments, 2 000 dynamic symbols in 49 KiB, names in 38 KiB, 31 dynamic entries).
MAX_SECTIONS = 1024
MAX_SEGMENTS = 128
MAX_SYMBOL_TABLE_BYTES = 4 * 1024 * 1024  # about 175 000 symbols of ELF64
MAX_STRING_TABLE_BYTES = 4 * 1024 * 1024
MAX_DYNAMIC_ENTRIES = 1024
MAX_NEEDED = 64  # libraries one binary needs: python needs 5
MAX_NAME_BYTES = 256  # a needed library's name
MAX_VALUE_BYTES = 8  # the data symbol read: Py_Version, an unsigned long
# All an identity reads of one file: the tables above and the headers.
MAX_FILE_READ_BYTES = MAX_SYMBOL_TABLE_BYTES + MAX_STRING_TABLE_BYTES + 1024 * 1024

_SHT_STRTAB, _SHT_DYNAMIC, _SHT_DYNSYM = 3, 6, 11
_PT_LOAD = 1
_DT_NULL, _DT_NEEDED = 0, 1
_SHN_UNDEF = 0


@dataclass(frozen=True)
class _Layout:
    """Where the fields are, for one ELF class (32 or 64 bits); fields not used are padding."""

    header: str  # e_phoff, e_shoff, e_phentsize, e_phnum, e_shentsize, e_shnum
    header_at: int  # the offset of e_phoff
    section: str  # sh_type, sh_offset, sh_size, sh_link, sh_entsize
    segment: str  # p_type, p_offset, p_vaddr, p_filesz
    symbol: str  # the fields below, in the file's order
    symbol_fields: tuple[int, int, int, int]  # where st_name, st_shndx, st_value, st_size are in it
    dynamic: str  # d_tag, d_val


_ELF64 = _Layout("QQ6xHHHH", 0x20, "4xI16xQQI4x8xQ", "I4xQQ8xQ16x", "I2xHQQ", (0, 1, 2, 3), "qQ")
_ELF32 = _Layout("II6xHHHH", 0x1c, "4xI8xIII8xI", "III4xI12x", "III2xH", (0, 3, 1, 2), "iI")
Section = tuple[int, int, int, int, int]  # sh_type, sh_offset, sh_size, sh_link, sh_entsize


@dataclass(frozen=True)
class ElfFacts:
    """What an ELF file declares, within the caps."""

    defined: frozenset[str]  # which of the names asked for it defines (exports, not imports)
    values: dict[str, bytes]  # the bytes of the data symbols asked for, where it has them
    needed: tuple[str, ...]  # the libraries it needs (DT_NEEDED), in its order
    little_endian: bool


def read_elf(file: UntrustedFile, names: frozenset[str], values: frozenset[str] = frozenset()) -> Optional[ElfFacts]:
    """The facts of ``file``, or None when it is not an ELF file or has no dynamic symbols.

    ``values`` are data symbols whose bytes are wanted (they count as names too). Raises
    Refused when the file declares more than the caps, or tables outside itself.
    """
    if file.size < 64:
        return None
    ident = file.pread(0, 64)
    if ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return None
    order = "<" if ident[5] == 1 else ">"
    layout = _ELF64 if ident[4] == 2 else _ELF32
    phoff, shoff, phentsize, phnum, shentsize, shnum = struct.unpack_from(order + layout.header, ident,
                                                                           layout.header_at)
    sections: list[Section] = _table(file, order + layout.section, shoff, shentsize, shnum, MAX_SECTIONS)
    dynsym = next((s for s in sections if s[0] == _SHT_DYNSYM), None)
    if dynsym is None or not 0 < dynsym[3] < len(sections) or sections[dynsym[3]][0] != _SHT_STRTAB:
        return None
    strings = _section_bytes(file, sections[dynsym[3]], MAX_STRING_TABLE_BYTES)
    symbols = _defined_symbols(file, order, layout, dynsym, strings, names | values)
    found: dict[str, bytes] = {}
    if symbols.keys() & values:
        segments = _table(file, order + layout.segment, phoff, phentsize, phnum, MAX_SEGMENTS)
        found = {name: value for name in symbols.keys() & values
                 if (value := _value(file, segments, *symbols[name])) is not None}
    dynamic = next((s for s in sections if s[0] == _SHT_DYNAMIC and s[3] == dynsym[3]), None)
    needed = _needed(file, order + layout.dynamic, dynamic, strings) if dynamic is not None else ()
    return ElfFacts(frozenset(symbols.keys() & names), found, needed, order == "<")


def _table(file: UntrustedFile, entry: str, offset: int, entry_size: int, count: int, cap: int) -> list[Any]:
    """A header table: ``count`` entries of ``entry_size`` bytes, each unpacked by ``entry``."""
    if count > cap:
        raise Refused(f"{file.path}: declares {count} headers (at most {cap})")
    if count == 0:
        return []
    if entry_size != struct.calcsize(entry):
        raise Refused(f"{file.path}: headers of {entry_size} bytes, not {struct.calcsize(entry)}")
    return list(struct.iter_unpack(entry, file.pread(offset, count * entry_size)))


def _section_bytes(file: UntrustedFile, section: Section, cap: int) -> bytes:
    _, offset, size, _, _ = section
    if size > cap:
        raise Refused(f"{file.path}: a table of {size} bytes (at most {cap})")
    return file.pread(offset, size)


def _defined_symbols(file: UntrustedFile, order: str, layout: _Layout, dynsym: Section, strings: bytes,
                     wanted: frozenset[str]) -> dict[str, tuple[int, int]]:
    """The dynamic symbols among ``wanted`` that the file defines: name -> (address, size)."""
    entry = order + layout.symbol
    entry_size = struct.calcsize(entry)
    if dynsym[4] != entry_size:
        raise Refused(f"{file.path}: symbols of {dynsym[4]} bytes, not {entry_size}")
    table = _section_bytes(file, dynsym, MAX_SYMBOL_TABLE_BYTES)
    # A symbol names itself by an offset in the string table; the linker may share a name's
    # bytes with a longer name ending the same way, so every place the name ends counts.
    by_offset = {offset: name for name in wanted for offset in _occurrences(strings, name.encode() + b"\0")}
    name_at, section_at, value_at, size_at = layout.symbol_fields
    found = {}
    for symbol in struct.iter_unpack(entry, table[:len(table) - len(table) % entry_size]):
        name = by_offset.get(symbol[name_at])
        if name is not None and symbol[section_at] != _SHN_UNDEF:
            found[name] = (symbol[value_at], symbol[size_at])
    return found


def _occurrences(data: bytes, needle: bytes) -> list[int]:
    found, start = [], data.find(needle)
    while start >= 0:
        found.append(start)
        start = data.find(needle, start + 1)
    return found


def _value(file: UntrustedFile, segments: list[tuple[int, int, int, int]], address: int, size: int) -> Optional[bytes]:
    """The bytes of a data symbol, from the loadable segment that holds its address."""
    if not 0 < size <= MAX_VALUE_BYTES:
        return None
    for kind, offset, start, length in segments:
        if kind == _PT_LOAD and start <= address and address + size <= start + length:
            return file.pread(offset + address - start, size)
    return None


def _needed(file: UntrustedFile, entry: str, dynamic: Section, strings: bytes) -> tuple[str, ...]:
    """The names of the libraries the file needs, from its dynamic section."""
    entry_size = struct.calcsize(entry)
    if dynamic[4] != entry_size:
        raise Refused(f"{file.path}: dynamic entries of {dynamic[4]} bytes, not {entry_size}")
    raw = _section_bytes(file, dynamic, MAX_DYNAMIC_ENTRIES * entry_size)
    needed: list[str] = []
    for tag, value in struct.iter_unpack(entry, raw[:len(raw) - len(raw) % entry_size]):
        if tag == _DT_NULL or len(needed) == MAX_NEEDED:
            break
        if tag == _DT_NEEDED and value < len(strings):
            needed.append(strings[value:value + MAX_NAME_BYTES].partition(b"\0")[0].decode("ascii", "replace"))
    return tuple(needed)
