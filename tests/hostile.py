"""Hostile VHDX images of issue 15: valid-looking files that demand unbounded memory, CPU
or disk, or that exploit an overflow.  Built on the fixture writer (tests/vhdxgen.py);
where it would need gigabytes of Python memory (huge logs, millions of descriptors) the
log entries are written here, from the same digest (shared/docs/vhdx-format.md §6).

    import hostile
    case = hostile.CASES["bat_offset_overflow"]
    facts = case.build(path)        # sparse file; facts: what a correct reader must do

`facts` (a dict):
  expect        'refuse': every command must refuse (exit 1 or 2, "vhdx: FILE: reason")
                'serve':  opening must work and read `twin`'s content after replay
                'either': refusing is fine; if served, the content must be `twin`'s
  twin          a vhdxgen.Image whose expected() is the correct content (or None)
  max_file_size the largest the file may become (what its geometry can use)
  max_problems  check-mode problem lines allowed (a bounded report)
  note          what today's core does, from the issue
  cpu_guard     (optional) CPU seconds allowed per command, when a single linear pass
                over the file costs more than hostile.test's default guard

SMALL lists the cases whose files are small enough to become fuzz inputs
(tests/fuzz/seeds.py); the others are generated at test time only.
"""
import os
import struct
import uuid

import vhdxgen as V

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
SECTOR = 4096
HEADER_SLOTS = (0x10000, 0x20000)


# ---- Writing into a built file ------------------------------------------------------------

def put(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def extend(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def set_header_fields(path, log_length=None, log_offset=None):
    """Change LogLength/LogOffset in both headers and reseal them (spec 2.2.2)."""
    with open(path, "r+b") as f:
        for slot in HEADER_SLOTS:
            f.seek(slot)
            h = bytearray(f.read(4096))
            if log_length is not None:
                struct.pack_into("<I", h, 68, log_length)
            if log_offset is not None:
                struct.pack_into("<Q", h, 72, log_offset)
            h[4:8] = bytes(4)
            struct.pack_into("<I", h, 4, V.crc32c(h))
            f.seek(slot)
            f.write(h)


def geometry_need(lay):
    """The largest file this geometry can use: its structures, then every block and
    sector bitmap allocated once."""
    ends = [lay.log_offset + lay.log_length, lay.bat_offset + lay.bat_length,
            lay.metadata_offset + lay.metadata_length, lay.file_size]
    return (max(ends) + MiB - 1) // MiB * MiB + lay.payload_blocks * lay.block_size + \
        lay.sb_blocks * MiB


# ---- CRC-32C of long repetitive data, fast (GF(2) affine maps) ------------------------------

def _crc_step(state, data):
    """The raw CRC register after `data` from `state` (no pre/post inversion)."""
    return V.crc32c(data, state ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _affine(block):
    """Processing `block` maps the register x to M(x) ^ k: (columns of M, k)."""
    k = _crc_step(0, block)
    return [_crc_step(1 << i, block) ^ k for i in range(32)], k


def _apply(cols, x):
    y = 0
    for i in range(32):
        if x >> i & 1:
            y ^= cols[i]
    return y


def crc32c_repeat(crc, block, count):
    """crc32c(block * count, crc) without building block * count."""
    cols, k = _affine(block)
    state = crc ^ 0xFFFFFFFF
    while count:                    # binary powers of the affine map
        if count & 1:
            state = _apply(cols, state) ^ k
        cols, k = [_apply(cols, c) for c in cols], _apply(cols, k) ^ k
        count >>= 1
    return state ^ 0xFFFFFFFF


# ---- Log entries (spec 2.3.1) ---------------------------------------------------------------

def zero_descriptor(offset, length, seq):
    return b"zero" + struct.pack("<IQQQ", 0, length, offset, seq)


def data_descriptor(offset, sector, seq):
    return b"desc" + sector[4092:4096] + sector[0:8] + struct.pack("<QQ", offset, seq)


def data_sector(sector, seq):
    return b"data" + struct.pack("<I", seq >> 32) + sector[8:4092] + \
        struct.pack("<I", seq & 0xFFFFFFFF)


def log_entry(guid, seq, descriptors=(), sectors=(), tail=0, flushed=0, last=0,
              repeat=None):
    """One entry: header, descriptors (32 bytes each), data sectors; CRC over all of it.
    repeat=(descriptor, count, index): `count` copies of `descriptor` inserted before
    descriptor `index`, checksummed without building them (millions of descriptors)."""
    descriptors = list(descriptors)
    n_repeat = repeat[1] if repeat else 0
    count = len(descriptors) + n_repeat
    desc_sectors = (count + 2 + 127) // 128
    length = (desc_sectors + len(sectors)) * SECTOR
    head = bytearray(64)
    head[0:4] = b"loge"
    struct.pack_into("<IIQII", head, 8, length, tail, seq, count, 0)
    head[32:48] = guid.bytes_le
    struct.pack_into("<QQ", head, 48, flushed, last)
    before = b"".join(descriptors[:repeat[2]]) if repeat else b"".join(descriptors)
    after = b"".join(descriptors[repeat[2]:]) if repeat else b""
    pad = desc_sectors * SECTOR - 64 - 32 * count
    tail_bytes = after + bytes(pad) + b"".join(data_sector(s, seq) for s in sectors)
    crc = V.crc32c(bytes(head) + before)
    if n_repeat:
        crc = crc32c_repeat(crc, repeat[0], n_repeat)
    crc = V.crc32c(tail_bytes, crc)
    struct.pack_into("<I", head, 4, crc)
    return [bytes(head) + before, (repeat[0], n_repeat) if n_repeat else None, tail_bytes]


def write_entry(path, offset, parts):
    """Write what log_entry returned at file offset `offset` (repeats streamed)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(parts[0])
        if parts[1]:
            block, n = parts[1]
            chunk = block * 4096
            while n >= 4096:
                f.write(chunk)
                n -= 4096
            f.write(block * n)
        f.write(parts[2])


# ---- The cases --------------------------------------------------------------------------------

class Case:
    def __init__(self, name, fn, summary):
        self.name, self.fn, self.summary = name, fn, summary

    def build(self, path):
        return self.fn(path)


CASES = {}


def case(name, summary):
    def deco(fn):
        CASES[name] = Case(name, fn, summary)
        return fn
    return deco


def with_data(img, blocks):
    for b in blocks:
        img.write(b * img.block_size, bytes([0x40 + b % 64]) * 4096)
    return img


def dirty_base(path, virtual=64 * MiB, block=2 * MiB, log_length=MiB, **kw):
    """A disk with data in a few blocks, a LogGuid in its headers and an empty log region
    (entries are written by the caller).  -> (twin Image, layout, LogGuid)."""
    img = with_data(V.Image(virtual, block_size=block, log_length=log_length, seed=15, **kw),
                    (0, 3, virtual // block - 1))
    guid = img.log().guid
    lay = img.build(path)
    twin = with_data(V.Image(virtual, block_size=block, seed=15), (0, 3, virtual // block - 1))
    return twin, lay, guid


@case("bat_offset_overflow", "BAT entry 0 FULLY_PRESENT at FileOffsetMB 2^44-1")
def _(path):
    img = with_data(V.Image(8 * MiB, block_size=2 * MiB, seed=15), (1, 2))
    img.set_bat_raw(0, ((1 << 44) - 1) << 20 | V.FULLY_PRESENT)
    lay = img.build(path)
    return {"expect": "refuse", "twin": None, "max_file_size": lay.file_size,
            "max_problems": 16, "write_offset": MiB + 192 * KiB, "write_length": 128 * KiB,
            "note": "offset + size wraps: check calls it clean, a write at 1 MiB + 192 KiB "
                    "overwrites both region tables"}


def long_log(path, length):
    """A dirty log of one entry (block 5 gets data) whose header claims `length` bytes."""
    img = with_data(V.Image(64 * MiB, block_size=2 * MiB, seed=15, log_offset=32 * MiB),
                    (0, 3))
    img.log().set_block(5, data=b"\x5c" * 4096)
    lay = img.build(path)
    set_header_fields(path, log_length=length)
    extend(path, lay.log_offset + length)
    return {"expect": "serve", "twin": img, "max_file_size": lay.log_offset + length,
            "max_problems": 16}


@case("log_1gib", "a 1 GiB log holding one entry")
def _(path):
    facts = long_log(path, GiB)
    facts["note"] = "the whole log is read into memory: 1.07 GB resident"
    return facts


@case("log_4gib_claim", "a header claiming a 4 GiB log (4 GiB - 1 MiB, the u32 maximum)")
def _(path):
    facts = long_log(path, 4 * GiB - MiB)
    facts["note"] = "the whole log is read into memory: 4.26 GB resident"
    facts["cpu_guard"] = 40     # one cold pass over 4 GiB of holes: ~10 s in the kernel
    return facts


def differencing_with_locator(path, item):
    img = with_data(V.Image(64 * MiB, block_size=2 * MiB, seed=15, metadata_length=2 * MiB,
                            has_parent=True), (0,))
    img.set_parent(raw_item=item)
    lay = img.build(path)
    return lay


def locator_item(count, entries, strings_start, strings, total):
    item = bytearray(total)
    item[0:16] = V.LOCATOR_TYPE_VHDX.bytes_le
    struct.pack_into("<HH", item, 16, 0, count)
    for i, (ko, vo, kl, vl) in enumerate(entries):
        struct.pack_into("<IIHH", item, 20 + 12 * i, ko, vo, kl, vl)
    item[strings_start:strings_start + len(strings)] = strings
    return bytes(item)


@case("locator_overlapping_windows",
      "parent locator: 65535 entries whose key and value windows overlap")
def _(path):
    count, length = 65535, 65534
    start = 20 + 12 * count
    units = [0x100 + k % 0xC000 for k in range((MiB - start) // 2)]
    strings = struct.pack("<%dH" % len(units), *units)
    entries = [(start + 2 * i, start + 2 * i, length, length) for i in range(count)]
    lay = differencing_with_locator(path, locator_item(count, entries, start, strings, MiB))
    return {"expect": "either", "twin": None, "max_file_size": lay.file_size,
            "max_problems": 16,
            "note": "each of 65535 entries copied separately: about 12.9 GB asked for"}


@case("locator_long_prefixes",
      "parent locator: 2,000 distinct 8 KiB keys sharing long prefixes")
def _(path):
    count, key_units = 2000, 4096
    start = 20 + 12 * count
    # Key i is the window at unit i of 'a' x 4096 then 'b's: 'a' x (4096 - i), 'b' x i.
    units = [0x61] * key_units + [0x62] * (count + 8) + list(range(0x100, 0x100 + count + 8))
    strings = struct.pack("<%dH" % len(units), *units)
    value_base = start + 2 * (key_units + count + 8)
    entries = [(start + 2 * i, value_base + 2 * i, 2 * key_units, 4) for i in range(count)]
    item_len = start + len(strings)
    lay = differencing_with_locator(path, locator_item(count, entries, start, strings, item_len))
    return {"expect": "either", "twin": None, "max_file_size": lay.file_size,
            "max_problems": 16,
            "note": "the duplicate-key check is quadratic in keys and key length (119 s)"}


def entry_headers_everywhere(path, length):
    """A log of `length` bytes whose every 4 KiB slot is an entry header claiming the
    whole log (valid fields, LogGuid matching, a checksum that never does)."""
    twin, lay, guid = dirty_base(path, log_length=MiB)
    offset = (lay.file_size + MiB - 1) // MiB * MiB
    extend(path, offset + length)
    set_header_fields(path, log_length=length, log_offset=offset)
    slot = bytearray(SECTOR)
    slot[0:4] = b"loge"
    struct.pack_into("<IIIQII", slot, 4, 0x12345678, length, 0, 1, 0, 0)
    slot[32:48] = guid.bytes_le
    struct.pack_into("<QQ", slot, 48, lay.file_size, lay.file_size)
    slot = bytes(slot)
    with open(path, "r+b") as f:
        f.seek(offset)
        for _ in range(length // (64 * SECTOR)):
            f.write(slot * 64)
    return {"expect": "refuse", "twin": None, "max_file_size": offset + length,
            "max_problems": 16,
            "note": "every slot is checksummed over the whole log: (log size)^2 / 4 KiB of "
                    "CRC up to a budget of 16 x log + 64 MiB (1 GiB log: 16 GiB, 65 s)"}


@case("log_entry_headers_everywhere",
      "a 256 MiB log whose every 4 KiB slot is an entry header claiming the whole log")
def _(path):
    return entry_headers_everywhere(path, 256 * MiB)


@case("log_entry_headers_everywhere_8mib",
      "the same with an 8 MiB log: small enough for the fuzz regression pass, which counts "
      "the bytes checksummed (192 MiB today, 24 per log byte)")
def _(path):
    return entry_headers_everywhere(path, 8 * MiB)


@case("check_overlapping_table",
      "a metadata table of 2047 entries, 2042 of them mutually overlapping duplicates")
def _(path):
    img = with_data(V.Image(64 * MiB, block_size=2 * MiB, seed=15), (0,))
    guid = uuid.UUID("5e1f7e5e-0000-4000-8000-000000000015")
    for _ in range(2047 - len(img.metadata)):
        img.add_metadata_item(guid=guid, data=b"\x15" * 16, offset=0x30000)
    lay = img.build(path)
    return {"expect": "either", "twin": None,
            "max_file_size": lay.file_size, "max_problems": 1000,
            "note": "check prints 4.2 million problem lines (287 MB) in 11 s"}


def descriptor_case(path, make_descriptors, expect="either"):
    twin, lay, guid = dirty_base(path)
    descriptors, sectors = make_descriptors(lay)
    parts = log_entry(guid, 7, descriptors, sectors, tail=0, flushed=lay.file_size,
                      last=lay.file_size)
    write_entry(path, lay.log_offset, parts)
    return {"expect": expect, "twin": twin, "max_file_size": geometry_need(lay),
            "max_problems": 16, "layout": lay}


@case("zero_descriptor_2gib", "a log zero descriptor of 2 GiB past the end of the file")
def _(path):
    facts = descriptor_case(path, lambda lay: ([zero_descriptor(lay.file_size, 2 * GiB, 7)],
                                               []))
    facts["note"] = "replay writes 2 GiB of real zeros (9.5 s); check says it replays cleanly"
    return facts


@case("data_descriptor_8tib", "a log data descriptor at file offset 8 TiB")
def _(path):
    sector = b"\x8e" * SECTOR
    facts = descriptor_case(path, lambda lay: ([data_descriptor(8 * TiB, sector, 7)], [sector]))
    facts["note"] = "replay grows the file to 8 TiB"
    return facts


@case("data_descriptor_end_128tib", "a log data descriptor ending at 128 TiB")
def _(path):
    sector = b"\x12" * SECTOR
    facts = descriptor_case(path, lambda lay: ([data_descriptor(128 * TiB - SECTOR, sector, 7)],
                                               [sector]))
    facts["note"] = "the grow fails only after the header was rewritten"
    return facts


@case("log_zeroes_metadata_table", "a dirty log whose entry zeroes the metadata table")
def _(path):
    facts = descriptor_case(path, lambda lay: ([zero_descriptor(lay.metadata_offset, 64 * KiB,
                                                                7)], []), expect="refuse")
    facts["note"] = "a writable open replays in place, marks the log clean, then fails"
    return facts


@case("two_million_zero_descriptors",
      "a log of 2,000,000 zero descriptors over a fixed 256 MiB disk")
def _(path):
    count = 2000000
    log_length = ((count + 2 + 127) // 128 * SECTOR + MiB - 1) // MiB * MiB
    img = V.Image(256 * MiB, block_size=MiB, fixed=True, log_length=log_length, seed=15)
    for b in (0, 100, 200, 255):
        img.write(b * MiB, bytes([0x40 + b % 64]) * 4096)
    guid = img.log().guid
    lay = img.build(path)
    at = {b: lay.blocks[b]["file_offset"] for b in (0, 100, 255)}
    # The first and last descriptors span the payload; the others all zero block 100.
    parts = log_entry(guid, 9, [zero_descriptor(at[0], SECTOR, 9),
                                zero_descriptor(at[255], SECTOR, 9)],
                      tail=0, flushed=lay.file_size, last=lay.file_size,
                      repeat=(zero_descriptor(at[100], SECTOR, 9), count - 2, 1))
    write_entry(path, lay.log_offset, parts)
    twin = V.Image(256 * MiB, block_size=MiB, fixed=True, seed=15)
    twin.write(200 * MiB, bytes([0x40 + 200 % 64]) * 4096)
    return {"expect": "serve", "twin": twin, "max_file_size": lay.file_size,
            "max_problems": 16,
            "note": "one overlay run per descriptor, all walked on every read (cat: 4 s)"}


# Files of a few MiB whose non-zero bytes are few: fuzz inputs (tests/fuzz/seeds.py).
SMALL = ["bat_offset_overflow", "log_1gib", "log_4gib_claim", "locator_long_prefixes",
         "log_entry_headers_everywhere_8mib", "check_overlapping_table",
         "zero_descriptor_2gib", "data_descriptor_8tib", "data_descriptor_end_128tib",
         "log_zeroes_metadata_table"]
