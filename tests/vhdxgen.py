#!/usr/bin/python3
"""vhdxgen -- spec-derived VHDX fixture writer (a test oracle).

Written only from the project's format digest (shared/docs/vhdx-format.md, a restatement of
Microsoft's MS-VHDX).  It shares no code with the C implementation it is meant to test, nor with
QEMU or any other VHDX implementation.  Python 3.11 standard library only.

Quick use::

    import vhdxgen
    img = vhdxgen.Image(64 << 20, block_size=2 << 20)
    img.write(5 << 20, b"hello")            # block 2 becomes FULLY_PRESENT
    img.set_block_state(7, vhdxgen.UNMAPPED, file_offset_mb="auto")   # stale pointer at junk
    layout = img.build("/tmp/a.vhdx")
    assert read_with_my_reader("/tmp/a.vhdx") == img.expected()

Dirty logs::

    lg = img.log()                          # random non-zero LogGuid in both headers
    lg.set_block(3, b"D" * 4096)            # data written in place, BAT update only in the log
    img.build(path)
    img.expected()                          # content after a correct replay
    img.expected_without_replay()           # content if the log were ignored

Corruptions::

    lay = vhdxgen.corruption_base().build(path)
    c = vhdxgen.apply_corruption(path, lay, "rt1_checksum")
    c.outcome   # 'ok' | 'reject' | 'either' | 'reject-or-eio'   (see Corruption)

Differencing chains (digest §7, §8.4, §9.8)::

    base = vhdxgen.Image(64 << 20, block_size=2 << 20, seed=1)
    vhdxgen.stamp_sectors(base, "BASE")             # every sector: 'BASE!!!!' + LBA
    snap = vhdxgen.make_child(base, block_size=1 << 20)   # same size/sectors, all NOT_PRESENT
    snap.write_partial(4096, b"S" * 512)            # PARTIALLY_PRESENT, one bitmap bit set
    snap.write(10 << 20, b"F" * 100)                # FULLY_PRESENT (rest of the block zeros)
    snap.set_block_state(3, vhdxgen.ZERO)           # reads zeros, not the parent
    vhdxgen.fill_every_state(snap)                  # or: every block state, cycled
    chain = vhdxgen.Chain([base, snap], names=["golden.vhdx", "snap.avhdx"])
    paths = chain.build(directory)                  # locators as Hyper-V writes them
    chain.expected()                                # the child read through the chain
    v = vhdxgen.open_file(paths[-1])                # resolves golden.vhdx per the locator
    v.chain                                         # files, locator key used, linkage

Bad chains::

    c = vhdxgen.make_bad_chain("linkage_mismatch", directory)
    c.child, c.outcome, c.reason, c.parent_tried   # see BadChain / ChainCase

Conventions: "fom" = FileOffsetMB (file offset in 1 MiB units).  Integers are little-endian,
GUIDs are stored in Microsoft mixed-endian form (uuid.UUID.bytes_le), digest §1.1.

`expected()` is computed by a small spec-following reader over the *rendered* bytes (headers,
region table, metadata table and BAT are parsed back; the log is searched and replayed per
digest §6.8-6.10), so anything the API lets you express -- including log entries that patch the
BAT, the metadata region or a region table -- is reflected.  It raises `Reject` when a correct
reader must refuse the image.  `open_file(path)` applies the same reader to any file.

Rules the oracle applies where the digest leaves a choice (keep the C reader consistent):
  * headers: valid = signature + CRC over 4096 bytes.  Equal sequence numbers: accepted only if
    bytes 8..79 (all defined fields) are identical, then header 1 is used; otherwise refused.
    The current header with Version != 1 refuses the file (no fallback to the older header).
  * region table: copy 1 if its signature and 64 KiB CRC are good, else copy 2.  A CRC-valid
    copy 1 with semantic errors is refused (no fallback).  Offsets/lengths 1 MiB aligned,
    offset >= 1 MiB, end < 2^64, no overlap with each other or the log.
  * metadata: all five system items (file parameters, disk size, disk id, logical and
    physical sector size) must exist with their exact lengths; flags of known items are not
    checked; reserved flag bits are ignored.  The metadata region must lie inside the file.
    VirtualDiskSize 0 is refused.
  * BAT: reserved bits 3..19 set -> refuse; payload states 4 and 5 -> refuse; 7 outside a
    differencing file -> refuse; SB_BLOCK_PRESENT in a non-differencing file is tolerated.
    Allocated blocks must start >= 1 MiB and not overlap the log, any region or each other;
    a FULLY_PRESENT block whose part *inside the virtual disk* extends past EOF -> refuse.
    FileOffsetMB of states 0-3 is ignored (never read, never overlap-checked).
  * log (LogGuid != 0): LogVersion != 0 -> refuse; log past EOF -> refuse.  Every 4 KiB
    offset is tried as a sequence start; a sequence is extended while the next entry
    (immediately following, modulo LogLength) is valid with SequenceNumber + 1; it counts only
    if the head's Tail equals the start of one of its entries (replay then starts there); the
    highest head SequenceNumber wins; none -> refuse; file shorter than the head's
    FlushedFileOffset -> refuse.  After replay the file is at least LastFileOffset long.
  * reads: NOT_PRESENT/UNDEFINED/ZERO/UNMAPPED read zeros, except NOT_PRESENT in a
    differencing file (the parent: an Image's `parent` model, or for open_file() the parent
    found through the locator).  PARTIALLY_PRESENT uses the chunk's sector bitmap (bit 1 =
    this file); FULLY_PRESENT never consults it.
  * differencing chains: see "Differencing chains" below open_file() for how parents are
    found and verified.
Log writer: every entry logs whole 4 KiB sectors as they stand after all earlier entries with
the same LogGuid (so a BAT sector logged later also carries earlier BAT updates in it).
"""

import bisect
import errno
import hashlib
import os
import random
import struct
import sys
import uuid

__all__ = [
    "Image", "Log", "LogEntry", "LooseBlock", "Layout", "Reject", "NotApplicable", "Corruption",
    "open_file", "load_file", "copy_sparse", "find_active_sequence", "decode_parent_locator",
    "CORRUPTIONS", "apply_corruption", "corruption_base", "crc32c", "encode_parent_locator",
    "chunk_ratio", "bat_entry_count", "payload_bat_index", "sb_bat_index",
    "NOT_PRESENT", "UNDEFINED", "ZERO", "UNMAPPED", "FULLY_PRESENT", "PARTIALLY_PRESENT",
    "SB_NOT_PRESENT", "SB_PRESENT",
    "open_chain", "make_child", "Chain", "stamp_sectors", "fill_every_state", "EVERY_STATE",
    "parse_guid_text", "locator_path_parts", "resolve_locator_path", "DEFAULT_MAX_DEPTH",
    "PATH_KEYS", "ZERO_GUID_TEXT", "BadChain", "ChainCase", "BAD_CHAINS", "make_bad_chain",
]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
SECTOR = 4096                      # log sector size

# ---------------------------------------------------------------------------------------------
# CRC-32C (digest §11): reflected polynomial 0x82F63B78, init/xorout 0xFFFFFFFF.


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def _gf2_apply(op, vec):
    r, i = 0, 0
    while vec:
        if vec & 1:
            r ^= op[i]
        vec >>= 1
        i += 1
    return r


def _zero_ops():
    """ops[k]: the linear map 'feed 2^k zero bytes' on the CRC register (32 columns)."""
    t = _CRC_TABLE
    op = [t[(1 << n) & 0xFF] ^ ((1 << n) >> 8) for n in range(32)]
    ops = [op]
    for _ in range(47):
        op = [_gf2_apply(op, op[n]) for n in range(32)]
        ops.append(op)
    return ops


_ZERO_OPS = _zero_ops()


def crc32c(data, crc=0):
    """CRC-32C of `data`.  Running form: crc32c(b, crc32c(a)) == crc32c(a + b).
    Trailing zero bytes are fed in O(log n) steps (most structures end in zeros)."""
    t = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    data = bytes(data)
    body = data.rstrip(b"\0")
    for b in body:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    n, k = len(data) - len(body), 0
    while n:
        if n & 1:
            c = _gf2_apply(_ZERO_OPS[k], c)
        n >>= 1
        k += 1
    return c ^ 0xFFFFFFFF


def _with_crc(buf, scope=None):
    """Zero bytes 4..7, CRC the buffer (or its first `scope` bytes) and store the LE result."""
    buf = bytearray(buf)
    buf[4:8] = b"\0\0\0\0"
    c = crc32c(buf if scope is None else buf[:scope])
    buf[4:8] = struct.pack("<I", c)
    return buf


def _crc_ok(buf):
    b = bytearray(buf)
    stored = struct.unpack_from("<I", b, 4)[0]
    b[4:8] = b"\0\0\0\0"
    return crc32c(b) == stored


# ---------------------------------------------------------------------------------------------
# Constants (digest §5, §8, §9)

GUID_BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
GUID_METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
ITEM_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
ITEM_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
ITEM_VIRTUAL_DISK_ID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
ITEM_LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
ITEM_PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
ITEM_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
LOCATOR_TYPE_VHDX = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
# Parent locator path keys in the order a reader tries them (digest §9.8)
PATH_KEYS = ("relative_path", "volume_path", "absolute_win32_path")
ZERO_GUID_TEXT = "{00000000-0000-0000-0000-000000000000}"

KNOWN_ITEMS = {
    "file_parameters": ITEM_FILE_PARAMETERS,
    "virtual_disk_size": ITEM_VIRTUAL_DISK_SIZE,
    "virtual_disk_id": ITEM_VIRTUAL_DISK_ID,
    "logical_sector_size": ITEM_LOGICAL_SECTOR_SIZE,
    "physical_sector_size": ITEM_PHYSICAL_SECTOR_SIZE,
    "parent_locator": ITEM_PARENT_LOCATOR,
}
_ITEM_NAME = {v: k for k, v in KNOWN_ITEMS.items()}
# Flags as Hyper-V/QEMU write them (digest §9.3): IsUser=1, IsVirtualDisk=2, IsRequired=4.
MD_IS_USER, MD_IS_VIRTUAL_DISK, MD_IS_REQUIRED = 1, 2, 4
_DEFAULT_FLAGS = {
    "file_parameters": 0x04, "parent_locator": 0x04, "virtual_disk_size": 0x06,
    "virtual_disk_id": 0x06, "logical_sector_size": 0x06, "physical_sector_size": 0x06,
}

NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
SB_NOT_PRESENT, SB_PRESENT = 0, 6
STATE_NAMES = {0: "NOT_PRESENT", 1: "UNDEFINED", 2: "ZERO", 3: "UNMAPPED", 4: "reserved4",
               5: "reserved5(old UNMAPPED)", 6: "FULLY_PRESENT", 7: "PARTIALLY_PRESENT"}
BAT_OFFSET_MASK = 0xFFFFFFFFFFF00000
BAT_RESERVED_MASK = 0x00000000000FFFF8
MAX_VIRTUAL_SIZE = 64 * TiB

HEADER_SLOTS = (0x10000, 0x20000)           # header 1, header 2
REGION_TABLE_SLOTS = (0x30000, 0x40000)     # copy 1, copy 2


def chunk_ratio(block_size, logical_sector):
    """Payload blocks per sector-bitmap chunk (digest §7)."""
    return ((1 << 23) * logical_sector) // block_size


def bat_entry_count(virtual_size, block_size, logical_sector, differencing=False):
    """Total BAT entries (digest §8.2)."""
    cr = chunk_ratio(block_size, logical_sector)
    pb = -(-virtual_size // block_size)
    if differencing:
        return -(-pb // cr) * (cr + 1)
    return pb + (pb - 1) // cr if pb else 0


def payload_bat_index(i, cr):
    """BAT index of payload block i: i + Fl(i / ChunkRatio) (digest §8.1, trap T7)."""
    return i + i // cr


def sb_bat_index(j, cr):
    """BAT index of sector-bitmap block j: j*(ChunkRatio+1) + ChunkRatio."""
    return j * (cr + 1) + cr


def _align_up(x, a):
    return -(-x // a) * a


def _is_pow2(x):
    return x > 0 and x & (x - 1) == 0


def _guid_bytes(g):
    if g is None:
        return bytes(16)
    if isinstance(g, (bytes, bytearray)):
        assert len(g) == 16
        return bytes(g)
    return g.bytes_le


def _junk(n, tag=0):
    """Deterministic non-zero filler (never all-zero in any 16-byte window)."""
    unit = b"\xA5JUNK%08x\x5A\xC3\x3C" % (tag & 0xFFFFFFFF)
    return (unit * (n // len(unit) + 1))[:n]


class Reject(Exception):
    """A correct reader must refuse to open this image (raised by Image.expected()).

    reason: None, or a short tag for the differencing rules: 'parent-missing', 'linkage',
    'sector-size', 'virtual-size', 'cycle', 'depth', 'locator', 'parent-invalid', 'bitmap'.
    child: the file whose parent could not be used; tried: [(locator key, path)] looked at."""

    def __init__(self, msg="", reason=None, child=None, tried=()):
        super().__init__(msg)
        self.reason, self.child, self.tried = reason, child, list(tried)

    def clone(self):
        return Reject(str(self), self.reason, self.child, self.tried)


class NotApplicable(Exception):
    """The named corruption does not apply to this layout."""


# ---------------------------------------------------------------------------------------------
# Sparse byte space


class Sparse:
    """Sorted, non-overlapping runs of bytes; everything else reads as zero."""

    def __init__(self):
        self.starts = []
        self.runs = []

    def copy(self):
        s = Sparse()
        s.starts = list(self.starts)
        s.runs = [bytearray(r) for r in self.runs]
        return s

    def write(self, off, data):
        data = bytes(data)
        if not data:
            return
        end = off + len(data)
        i = bisect.bisect_right(self.starts, off) - 1
        if i >= 0 and self.starts[i] + len(self.runs[i]) >= end:
            s = self.starts[i]                       # entirely inside one run: in place
            self.runs[i][off - s:end - s] = data
            return
        first = i if i >= 0 and self.starts[i] + len(self.runs[i]) > off else i + 1
        j = first
        while j < len(self.starts) and self.starts[j] < end:
            j += 1
        if first == j:
            self.starts.insert(first, off)
            self.runs.insert(first, bytearray(data))
            return
        ns = min(off, self.starts[first])
        ne = max(end, self.starts[j - 1] + len(self.runs[j - 1]))
        buf = bytearray(ne - ns)
        for k in range(first, j):
            s = self.starts[k] - ns
            buf[s:s + len(self.runs[k])] = self.runs[k]
        buf[off - ns:end - ns] = data
        self.starts[first:j] = [ns]
        self.runs[first:j] = [buf]

    def read(self, off, n):
        out = bytearray(n)
        end = off + n
        i = max(bisect.bisect_right(self.starts, off) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            s, r = self.starts[i], self.runs[i]
            a, b = max(s, off), min(s + len(r), end)
            if a < b:
                out[a - off:b - off] = r[a - s:b - s]
            i += 1
        return bytes(out)

    def truncate(self, size):
        while self.starts and self.starts[-1] >= size:
            self.starts.pop()
            self.runs.pop()
        if self.starts and self.starts[-1] + len(self.runs[-1]) > size:
            del self.runs[-1][size - self.starts[-1]:]

    def overlapping(self, off, n):
        """(start, length) of the runs intersecting [off, off+n), clipped."""
        end = off + n
        res = []
        i = max(bisect.bisect_right(self.starts, off) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            s, r = self.starts[i], self.runs[i]
            a, b = max(s, off), min(s + len(r), end)
            if a < b:
                res.append((a, b - a))
            i += 1
        return res

    def items(self):
        return zip(self.starts, self.runs)


# ---------------------------------------------------------------------------------------------
# Layout description returned by build()


class Layout(dict):
    """Dict with attribute access describing where everything went (all offsets are file
    offsets unless the key says otherwise).  Main keys: file_size, header_offsets,
    current_header, region_table_offsets, log_offset, log_length, log_guid, bat_offset,
    bat_length, bat_entries, chunk_ratio, payload_blocks, sb_blocks, metadata_offset,
    metadata_length, metadata_items{name: {guid, offset (region-relative), file_offset, length,
    flags, table_index, entry_offset}}, regions[{name, guid, offset, length, required,
    entry_index}], blocks{i: {state, fom, file_offset, bat_index, bat_entry_offset,
    data_in_file}},
    sb{j: {...}}, loose_blocks[...], log_entries[...], block_size, logical_sector,
    physical_sector, virtual_size, fixed, differencing, features."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None

    def bat_entry_offset(self, index):
        return self["bat_offset"] + 8 * index

    def payload_entry_offset(self, block):
        return self.bat_entry_offset(payload_bat_index(block, self["chunk_ratio"]))


# ---------------------------------------------------------------------------------------------
# Parent locator (digest §9.8)


def encode_parent_locator(entries, locator_type=LOCATOR_TYPE_VHDX, key_value_count=None,
                          strings_first=False):
    """entries: list of (key, value) as str (encoded UTF-16LE) or bytes (raw).  Offsets are
    relative to the start of the locator item.  strings_first=True puts all values before all
    keys (order of strings is not prescribed)."""
    entries = [(k.encode("utf-16-le") if isinstance(k, str) else bytes(k),
                v.encode("utf-16-le") if isinstance(v, str) else bytes(v)) for k, v in entries]
    n = len(entries)
    head = bytearray(20)
    head[0:16] = _guid_bytes(locator_type)
    struct.pack_into("<HH", head, 16, 0, n if key_value_count is None else key_value_count)
    table = bytearray(12 * n)
    strings = bytearray()
    base = 20 + 12 * n
    offs = []
    seq = ([(i, 1) for i in range(n)] + [(i, 0) for i in range(n)]) if strings_first else \
        [(i, w) for i in range(n) for w in (0, 1)]
    for i, w in seq:
        offs.append(((i, w), base + len(strings)))
        strings += entries[i][w]
    offmap = dict(offs)
    for i, (k, v) in enumerate(entries):
        struct.pack_into("<IIHH", table, 12 * i, offmap[(i, 0)], offmap[(i, 1)], len(k), len(v))
    return bytes(head + table + strings)


def decode_parent_locator(item):
    """-> (locator_type UUID, [(key, value)]) ; raises Reject on structural errors."""
    if len(item) < 20:
        raise Reject("parent locator shorter than its header")
    ltype = uuid.UUID(bytes_le=bytes(item[0:16]))
    count = struct.unpack_from("<H", item, 18)[0]
    if 20 + 12 * count > len(item):
        raise Reject("parent locator entries exceed the item")
    res = []
    for i in range(count):
        ko, vo, kl, vl = struct.unpack_from("<IIHH", item, 20 + 12 * i)
        if not (ko and vo and kl and vl) or ko + kl > len(item) or vo + vl > len(item) \
                or kl % 2 or vl % 2:
            raise Reject("bad parent locator entry %d" % i)
        res.append((bytes(item[ko:ko + kl]).decode("utf-16-le"),
                    bytes(item[vo:vo + vl]).decode("utf-16-le")))
    return ltype, res


# ---------------------------------------------------------------------------------------------
# Model objects


class _Block:
    __slots__ = ("state", "fom", "data", "stale", "bitmap")

    def __init__(self, state):
        self.state = state
        self.fom = 0            # 0 = auto for FULLY/PARTIALLY_PRESENT, else literal; "auto"
        self.data = Sparse()    # logical content, block-relative
        self.stale = "junk"     # content at fom for non-present states: "junk" | "data" | None
        self.bitmap = None      # bytearray, sector bits for PARTIALLY_PRESENT


class _HeaderSpec:
    def __init__(self, sequence):
        self.sequence = sequence
        self.zeroed = False
        self.corrupt = False            # CRC field wrong
        self.torn = False               # True: bytes 2048..4095 are junk (torn write)
        self.signature = b"head"
        self.version = 1
        self.log_version = 0
        self.file_write_guid = None     # None -> image value
        self.data_write_guid = None
        self.log_guid = None            # None -> image log guid (zero if no log)
        self.log_offset = None          # None -> layout value
        self.log_length = None
        self.reserved = None            # bytes for offsets 80..4095 (None = zeros)


class _RegionTableSpec:
    def __init__(self):
        self.zeroed = False
        self.corrupt = False
        self.signature = b"regi"
        self.order = None               # list of region names, None = default order
        self.entry_count = None         # override EntryCount
        self.omit = ()                  # region names to leave out
        self.extra_entries = []         # raw (guid, offset, length, required)
        self.reserved = 0


class LooseBlock:
    """A physical payload block written directly into the file, not referenced by the in-place
    BAT (typically made reachable by a log entry).  `fom` is known after planning."""

    def __init__(self, block, data, data_offset, fom, stale_junk=False):
        self.block = block
        self.data = Sparse()
        if data:
            self.data.write(data_offset, data)
        self.fom = fom          # None = auto
        self.placed = None
        self.junk = stale_junk


class LogEntry:
    """One log entry (see Log.entry).  After build: .position, .length, .tail, .file_offset."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.position = None
        self.length = None


class Log:
    """Dirty-log builder for an Image (digest §6).  Entries are laid out consecutively in the
    circular log in creation order (modulo LogLength); later entries overwrite earlier ones
    where they overlap."""

    def __init__(self, img, guid):
        self.img = img
        self.guid = guid
        self.entries = []
        self.loose = []
        self.fill = None        # None: log region zero; bytes/callable: initial log contents
        self.next_seq = 1

    # -- raw entries ------------------------------------------------------------------------
    def entry(self, seq=None, writes=(), zeros=(), patches=(), bat=(), tail=None, position=None,
              flushed_file_offset=None, last_file_offset=None, guid=None, torn=False,
              torn_garbage=False, corrupt_crc=False, pad_sectors=0, descriptor_sectors=None,
              descriptor_count=None, mutate=None, mutate_after_crc=None, new_sequence=False):
        """Append a log entry.

        writes   [(file_offset, data)]: 4 KiB aligned, len multiple of 4096 -> data descriptors
        zeros    [(file_offset, length)]: -> zero descriptors
        patches  [(file_offset, data)]: arbitrary byte patches, expanded to whole 4 KiB sectors
                 by read-modify-write against the file as it would be after all earlier entries
                 of the same LogGuid (trap T12)
        bat      [(block_index, state, fom_or_LooseBlock)]: payload BAT entry updates (patches)
        Offsets / data may be callables taking the Layout.
        Descriptor order: writes, zeros, patches+bat (sorted by sector).
        tail     None: first entry of the current run; int log offset; or a LogEntry
        position None: right after the previous entry (0 for the first)
        flushed_file_offset / last_file_offset: None = planned file size (1 MiB multiple)
        guid     None: the log's guid (entries with another guid are stale)
        torn     True/int: log sector (index within the entry; True = last) keeps the old log
                 contents (torn_garbage=True: random garbage instead)
        corrupt_crc: store a wrong checksum
        mutate(buf)/mutate_after_crc(buf): hooks on the entry bytearray before/after the CRC
        descriptor_count: override the DescriptorCount field (before CRC)
        new_sequence: force a new run (default tail = this entry)."""
        if seq is None:
            seq = self.next_seq
        self.next_seq = seq + 1
        e = LogEntry(seq=seq, writes=list(writes), zeros=list(zeros), patches=list(patches),
                     bat=list(bat), tail=tail, want_position=position,
                     flushed=flushed_file_offset, last=last_file_offset, guid=guid, torn=torn,
                     torn_garbage=torn_garbage, corrupt_crc=corrupt_crc, pad=pad_sectors,
                     desc_sectors=descriptor_sectors, desc_count=descriptor_count, mutate=mutate,
                     mutate_after_crc=mutate_after_crc, new_sequence=new_sequence)
        self.entries.append(e)
        self.img._dirty()
        return e

    # -- helpers ----------------------------------------------------------------------------
    def allocate(self, block, data=b"", data_offset=0, file_offset_mb=None):
        """Place a physical copy of virtual block `block` (content: `data` at `data_offset`,
        rest zeros) in the file without referencing it from the in-place BAT."""
        img = self.img
        if block >= img.payload_blocks:
            raise ValueError("block out of range")
        if data_offset + len(data) > img.block_size:
            raise ValueError("data exceeds the block")
        lb = LooseBlock(block, data, data_offset, file_offset_mb)
        self.loose.append(lb)
        img._dirty()
        return lb

    def set_block(self, block, data=b"", data_offset=0, file_offset_mb=None,
                  state=FULLY_PRESENT, **entry_kw):
        """One entry: block `block` becomes `state` at a freshly allocated location holding
        `data` (written directly to the file); the in-place BAT stays stale.  A replaying reader
        sees `data`, a non-replaying reader sees the old state (usually zeros)."""
        lb = self.allocate(block, data, data_offset, file_offset_mb)
        return self.entry(bat=[(block, state, lb)], **entry_kw)

    def set_bat(self, block, state, file_offset_mb=0, **entry_kw):
        return self.entry(bat=[(block, state, file_offset_mb)], **entry_kw)

    def set_metadata(self, name, data, **entry_kw):
        """Patch the bytes of metadata item `name` (e.g. 'virtual_disk_size') via the log."""
        def off(L, name=name):
            return L.metadata_items[name]["file_offset"]
        return self.entry(patches=[(off, data)], **entry_kw)


# ---------------------------------------------------------------------------------------------
# Image


class Image:
    """In-memory model of a VHDX file.

    Image(virtual_size, block_size=32 MiB, logical_sector=512, physical_sector=4096,
          fixed=False, log_length=1 MiB, log_offset=None, metadata_offset=None,
          metadata_length=1 MiB, bat_offset=None, bat_length=None,
          placement_order=('log','metadata','bat','regions','blocks','sb','loose'),
          block_order='index', seed=None, creator=..., file_write_guid=None,
          data_write_guid=None, virtual_disk_id=None, has_parent=False, parent=None,
          parent_locator=None, strict=True, file_size=None, bat_entries=None)

    *_offset arguments place an object at a fixed file offset (None = automatic: objects are
    packed from 1 MiB in placement_order, skipping fixed ones).  block_order: 'index',
    'reverse', 'shuffle' or an explicit list of block indexes (allocation order).
    bat_entries: override the BAT entry count written (default per digest §8.2)."""

    def __init__(self, virtual_size, block_size=32 * MiB, logical_sector=512,
                 physical_sector=4096, fixed=False, log_length=MiB, log_offset=None,
                 metadata_offset=None, metadata_length=MiB, bat_offset=None, bat_length=None,
                 placement_order=("log", "metadata", "bat", "regions", "blocks", "sb", "loose"),
                 block_order="index", seed=None, creator="vhdxgen (spec-derived test oracle)",
                 file_write_guid=None, data_write_guid=None, virtual_disk_id=None,
                 has_parent=False, parent=None, parent_locator=None, strict=True,
                 file_size=None, bat_entries=None):
        if strict:
            if logical_sector not in (512, 4096) or physical_sector not in (512, 4096):
                raise ValueError("sector sizes must be 512 or 4096")
            if not (_is_pow2(block_size) and MiB <= block_size <= 256 * MiB):
                raise ValueError("block size must be a power of two in [1 MiB, 256 MiB]")
            if virtual_size <= 0 or virtual_size % logical_sector or \
                    virtual_size > MAX_VIRTUAL_SIZE:
                raise ValueError("bad virtual size")
            if log_length % MiB:
                raise ValueError("log length must be a multiple of 1 MiB")
        self.rng = random.Random(seed)
        self.virtual_size = virtual_size
        self.block_size = block_size
        self.logical_sector = logical_sector
        self.physical_sector = physical_sector
        self.fixed = fixed
        self.log_length = log_length
        self.log_offset = log_offset
        self.metadata_offset = metadata_offset
        self.metadata_length = metadata_length
        self.bat_offset = bat_offset
        self.bat_length = bat_length
        self.placement_order = tuple(placement_order)
        self.block_order = block_order
        self.creator = creator
        self.ident_signature = b"vhdxfile"
        self.file_write_guid = file_write_guid or self._uuid()
        self.data_write_guid = data_write_guid or self._uuid()
        self.virtual_disk_id = virtual_disk_id or self._uuid()
        self.parent = parent
        self.has_parent = has_parent or parent is not None or parent_locator is not None
        self.file_size = file_size
        self.bat_entries_override = bat_entries
        self.file_parameters_extra_flags = 0
        self.blocks = {}
        self.sb_override = {}           # chunk -> (state, fom)
        self.bat_raw = {}               # BAT index -> raw u64 (applied last)
        self.log_guid = None
        self._log = None
        self.headers = [_HeaderSpec(1), _HeaderSpec(2)]
        self.region_tables = [_RegionTableSpec(), _RegionTableSpec()]
        self.extra_regions = []         # dicts: name, guid, length, required, offset, fill
        self.region_order = ["bat", "metadata"]
        self.partial_junk = False
        self.cr = chunk_ratio(block_size, logical_sector)
        self.payload_blocks = -(-virtual_size // block_size)
        # metadata items, in table order
        self.metadata = []
        for name in ("file_parameters", "virtual_disk_size", "virtual_disk_id",
                     "logical_sector_size", "physical_sector_size"):
            self.metadata.append(self._mk_item(name))
        self.metadata_data_order = None     # names: packing order of item data (None = table)
        self.metadata_entry_count = None
        self.metadata_signature = b"metadata"
        self.locator_entries = None
        self.locator_type = LOCATOR_TYPE_VHDX
        if self.has_parent:
            self.set_parent(parent=parent, entries=parent_locator)
        self._cache = None

    # -- small helpers -----------------------------------------------------------------------
    def _uuid(self):
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _dirty(self):
        self._cache = None
        self._views = {}

    @staticmethod
    def _mk_item(name, guid=None, data=None, flags=None):
        return {"name": name, "guid": guid or KNOWN_ITEMS[name], "data": data,
                "flags": _DEFAULT_FLAGS.get(name, 0) if flags is None else flags,
                "offset": None, "length": None, "reserved": 0}

    @property
    def differencing(self):
        return self.has_parent

    def bat_entry_count(self):
        if self.bat_entries_override is not None:
            return self.bat_entries_override
        return bat_entry_count(self.virtual_size, self.block_size, self.logical_sector,
                               self.differencing)

    def _block(self, i, create=True):
        b = self.blocks.get(i)
        if b is None and create:
            b = self.blocks[i] = _Block(FULLY_PRESENT if self.fixed else NOT_PRESENT)
        return b

    def block_state(self, i):
        b = self.blocks.get(i)
        return b.state if b else (FULLY_PRESENT if self.fixed else NOT_PRESENT)

    # -- content ----------------------------------------------------------------------------
    def write(self, offset, data):
        """Write virtual-disk data.  Covered blocks become FULLY_PRESENT (a block that was not
        present starts as zeros).  PARTIALLY_PRESENT blocks stay partial and get their sector
        bits set (the range must then be sector aligned)."""
        data = bytes(data)
        if offset < 0 or offset + len(data) > self.virtual_size:
            raise ValueError("write beyond the virtual disk")
        pos = 0
        while pos < len(data):
            v = offset + pos
            i, bo = divmod(v, self.block_size)
            n = min(self.block_size - bo, len(data) - pos)
            b = self._block(i)
            if b.state == PARTIALLY_PRESENT:
                self._set_bits(b, bo, n)
            elif b.state != FULLY_PRESENT:
                b.state = FULLY_PRESENT
                b.data = Sparse()
                if b.fom == "auto" or not isinstance(b.fom, int):
                    b.fom = 0
            b.data.write(bo, data[pos:pos + n])
            pos += n
        self._dirty()

    def write_partial(self, offset, data):
        """Differencing only: sector-aligned write that makes the blocks PARTIALLY_PRESENT
        (sector-bitmap bits set for the written sectors, other sectors come from the parent)."""
        lss = self.logical_sector
        if not self.differencing:
            raise ValueError("PARTIALLY_PRESENT needs a differencing image")
        if offset % lss or len(data) % lss:
            raise ValueError("partial writes must be sector aligned")
        pos = 0
        while pos < len(data):
            v = offset + pos
            i, bo = divmod(v, self.block_size)
            n = min(self.block_size - bo, len(data) - pos)
            b = self._block(i)
            if b.state not in (FULLY_PRESENT, PARTIALLY_PRESENT):
                b.state = PARTIALLY_PRESENT
                b.data = Sparse()
                b.fom = 0
            if b.state == PARTIALLY_PRESENT:
                self._set_bits(b, bo, n)
            b.data.write(bo, data[pos:pos + n])
            pos += n
        self._dirty()

    def _set_bits(self, b, bo, n):
        lss = self.logical_sector
        if bo % lss or n % lss:
            raise ValueError("writes into PARTIALLY_PRESENT blocks must be sector aligned")
        if b.bitmap is None:
            b.bitmap = bytearray(self.block_size // lss // 8 or 1)
        for s in range(bo // lss, (bo + n) // lss):
            b.bitmap[s >> 3] |= 1 << (s & 7)

    def set_block_state(self, block_index, state, file_offset_mb=0, stale="junk"):
        """Set payload block state 0..7.  file_offset_mb: 0 = automatic location for
        FULLY/PARTIALLY_PRESENT (literal 0 otherwise); int = literal FileOffsetMB; "auto" =
        allocate a location.  For other states with a non-zero location, `stale` says what is
        put there: "junk" (non-zero filler), "data" (the block's previous contents) or None."""
        if not 0 <= state <= 7:
            raise ValueError("state must be 0..7")
        if not 0 <= block_index < self.payload_blocks:
            raise ValueError("block index out of range")
        b = self._block(block_index)
        if state in (FULLY_PRESENT, PARTIALLY_PRESENT) and b.state not in (
                FULLY_PRESENT, PARTIALLY_PRESENT):
            b.data = Sparse()
        if state == PARTIALLY_PRESENT and b.bitmap is None:
            b.bitmap = bytearray(self.block_size // self.logical_sector // 8 or 1)
        b.state = state
        b.fom = file_offset_mb
        b.stale = stale
        self._dirty()

    def set_sb_state(self, chunk, state, file_offset_mb="auto"):
        """Force the sector-bitmap BAT entry of chunk `chunk` (differencing: default is
        SB_PRESENT where needed)."""
        self.sb_override[chunk] = (state, file_offset_mb)
        self._dirty()

    def set_bat_raw(self, index, value):
        """Store a raw u64 at BAT index `index` (applied after everything else)."""
        self.bat_raw[index] = value
        self._dirty()

    # -- headers / regions / metadata --------------------------------------------------------
    def header(self, slot, sequence=None, zeroed=None, corrupt=None, torn=None, **fields):
        """Configure header slot 1 or 2.  fields: signature, version, log_version,
        file_write_guid, data_write_guid, log_guid (UUID or bytes; uuid.UUID(int=0) for zero),
        log_offset, log_length, reserved (bytes for 80..4095)."""
        h = self.headers[slot - 1]
        if sequence is not None:
            h.sequence = sequence
        if zeroed is not None:
            h.zeroed = zeroed
        if corrupt is not None:
            h.corrupt = corrupt
        if torn is not None:
            h.torn = torn
        for k, v in fields.items():
            if not hasattr(h, k):
                raise TypeError("unknown header field %s" % k)
            setattr(h, k, v)
        self._dirty()
        return h

    def headers_equal(self, sequence=1):
        """Disk2vhd style: both headers identical, equal sequence numbers."""
        self.header(1, sequence=sequence)
        self.header(2, sequence=sequence)

    def region_table(self, copy, **fields):
        """Configure region-table copy 1 or 2: zeroed, corrupt, signature, order (names),
        entry_count, omit (names), extra_entries [(guid, offset, length, required)],
        reserved."""
        t = self.region_tables[copy - 1]
        for k, v in fields.items():
            if not hasattr(t, k):
                raise TypeError("unknown region table field %s" % k)
            setattr(t, k, v)
        self._dirty()
        return t

    def add_region(self, guid=None, length=MiB, required=False, offset=None, fill=None,
                   name=None):
        """Add an extra (unknown) region, present in both region-table copies."""
        guid = guid or self._uuid()
        name = name or "region%d" % len(self.extra_regions)
        self.extra_regions.append({"name": name, "guid": guid, "length": length,
                                   "required": required, "offset": offset, "fill": fill})
        self.region_order.append(name)
        self._dirty()
        return name

    def metadata_item(self, name, **fields):
        """Modify a metadata item: data (bytes override), flags, offset (region-relative),
        length (table value override), guid, reserved."""
        for it in self.metadata:
            if it["name"] == name:
                for k, v in fields.items():
                    if k not in it:
                        raise TypeError("unknown item field %s" % k)
                    it[k] = v
                self._dirty()
                return it
        raise KeyError(name)

    def add_metadata_item(self, guid=None, data=b"", flags=0, offset=None, name=None,
                          user=False, required=False, virtual_disk=False, index=None):
        """Add a metadata item (user or unknown system item).  Returns its name."""
        guid = guid or self._uuid()
        name = name or "item%d" % len(self.metadata)
        flags |= (MD_IS_USER if user else 0) | (MD_IS_REQUIRED if required else 0) | \
            (MD_IS_VIRTUAL_DISK if virtual_disk else 0)
        it = self._mk_item(name, guid=guid, data=bytes(data), flags=flags)
        it["offset"] = offset
        if index is None:
            self.metadata.append(it)
        else:
            self.metadata.insert(index, it)
        self._dirty()
        return name

    def remove_metadata_item(self, name):
        self.metadata = [it for it in self.metadata if it["name"] != name]
        self._dirty()

    def set_metadata_order(self, names, data_order=None):
        """Reorder metadata table entries (names) and optionally the packing order of their
        data in the region."""
        byname = {it["name"]: it for it in self.metadata}
        self.metadata = [byname[n] for n in names] + \
            [it for it in self.metadata if it["name"] not in names]
        self.metadata_data_order = data_order
        self._dirty()

    def set_parent(self, parent=None, entries=None, locator_type=LOCATOR_TYPE_VHDX,
                   relative_path=".\\parent.vhdx", raw_item=None):
        """Make this a differencing image (HasParent=1) with a parent locator item.
        entries: list of (key, value) (str -> UTF-16LE, bytes raw); default: parent_linkage =
        parent's DataWriteGuid ('{...}' lower case) and relative_path.  raw_item: full item
        bytes."""
        self.has_parent = True
        if parent is not None:
            self.parent = parent
            if parent.virtual_size != self.virtual_size:
                raise ValueError("child virtual size must equal the parent's")
        if entries is None:
            linkage = parent.data_write_guid if parent is not None else self._uuid()
            entries = [("parent_linkage", "{%s}" % linkage), ("relative_path", relative_path)]
        if isinstance(entries, dict):
            entries = list(entries.items())
        self.locator_entries = list(entries)
        self.locator_type = locator_type
        if not any(it["name"] == "parent_locator" for it in self.metadata):
            self.metadata.append(self._mk_item("parent_locator"))
        self.metadata_item("parent_locator", data=raw_item)
        self.cr = chunk_ratio(self.block_size, self.logical_sector)
        self._dirty()

    def log(self, guid=None):
        """Start (or return) the dirty log.  Sets a random non-zero LogGuid (or `guid`) that
        both headers carry unless a header overrides log_guid."""
        if self._log is None:
            self.log_guid = guid or self._uuid()
            self._log = Log(self, self.log_guid)
        elif guid is not None:
            self.log_guid = self._log.guid = guid
        self._dirty()
        return self._log

    # -- planning ----------------------------------------------------------------------------
    def _item_data(self, it):
        if it["data"] is not None:
            return bytes(it["data"])
        n = it["name"]
        if n == "file_parameters":
            flags = (1 if self.fixed else 0) | (2 if self.has_parent else 0) | \
                self.file_parameters_extra_flags
            return struct.pack("<II", self.block_size, flags)
        if n == "virtual_disk_size":
            return struct.pack("<Q", self.virtual_size)
        if n == "virtual_disk_id":
            return self.virtual_disk_id.bytes_le
        if n == "logical_sector_size":
            return struct.pack("<I", self.logical_sector)
        if n == "physical_sector_size":
            return struct.pack("<I", self.physical_sector)
        if n == "parent_locator":
            return encode_parent_locator(self.locator_entries or [], self.locator_type)
        return b""

    def _block_iter_order(self):
        order = self.block_order
        idx = list(range(self.payload_blocks)) if self.fixed else sorted(self.blocks)
        if order == "index":
            return idx
        if order == "reverse":
            return idx[::-1]
        if order == "shuffle":
            r = random.Random(len(idx) * 7919 + self.payload_blocks)
            idx = list(idx)
            r.shuffle(idx)
            return idx
        given = list(order)
        return given + [i for i in idx if i not in set(given)]

    def _plan(self):
        bs = self.block_size
        cr = self.cr
        lay = Layout()
        lay.update(virtual_size=self.virtual_size, block_size=bs, chunk_ratio=cr,
                   logical_sector=self.logical_sector, physical_sector=self.physical_sector,
                   fixed=self.fixed, differencing=self.differencing,
                   payload_blocks=self.payload_blocks,
                   sb_blocks=-(-self.payload_blocks // cr), bat_entries=self.bat_entry_count(),
                   header_offsets=list(HEADER_SLOTS), region_table_offsets=list(REGION_TABLE_SLOTS),
                   ident_offset=0, log_guid=self.log_guid)
        bat_len = self.bat_length
        if bat_len is None:
            bat_len = max(MiB, _align_up(8 * lay.bat_entries, MiB))
        reserved = [(0, MiB)]
        explicit = {}

        def fix(key, off, size):
            explicit[key] = off
            reserved.append((off, off + size))

        if self.log_offset is not None:
            fix("log", self.log_offset, self.log_length)
        if self.metadata_offset is not None:
            fix("metadata", self.metadata_offset, self.metadata_length)
        if self.bat_offset is not None:
            fix("bat", self.bat_offset, bat_len)
        for r in self.extra_regions:
            if r["offset"] is not None:
                fix(("region", r["name"]), r["offset"], r["length"])
        # blocks
        blocks_auto, blocks_loc = [], {}
        for i in self._block_iter_order():
            st = self.block_state(i)
            b = self.blocks.get(i)
            fom = b.fom if b else 0
            present = st in (FULLY_PRESENT, PARTIALLY_PRESENT)
            if fom == "auto" or (present and fom in (0, None)):
                blocks_auto.append(i)
            elif isinstance(fom, int) and fom and (present or (b.stale is not None)):
                blocks_loc[i] = fom * MiB
                reserved.append((fom * MiB, fom * MiB + bs))
        # sector bitmap blocks
        sb_needed = {}
        if self.differencing:
            for i, b in self.blocks.items():
                if b.state == PARTIALLY_PRESENT:
                    sb_needed[i // cr] = (SB_PRESENT, "auto")
        sb_needed.update(self.sb_override)
        sb_auto, sb_loc = [], {}
        for j in sorted(sb_needed):
            st, fom = sb_needed[j]
            if fom == "auto":
                sb_auto.append(j)
            elif fom:
                sb_loc[j] = fom * MiB
                reserved.append((fom * MiB, fom * MiB + MiB))
        loose = self._log.loose if self._log else []
        loose_auto = []
        for lb in loose:
            if lb.fom:
                lb.placed = lb.fom * MiB
                reserved.append((lb.placed, lb.placed + bs))
            else:
                loose_auto.append(lb)

        state = {"cursor": MiB}

        def alloc(size):
            pos = state["cursor"]
            while True:
                hit = [e for (s, e) in reserved if s < pos + size and pos < e]
                if not hit:
                    break
                pos = _align_up(max(hit), MiB)
            reserved.append((pos, pos + size))
            state["cursor"] = pos + size
            return pos

        placed = dict(explicit)
        for what in self.placement_order:
            if what == "log" and "log" not in placed:
                placed["log"] = alloc(self.log_length) if self.log_length else MiB
            elif what == "metadata" and "metadata" not in placed:
                placed["metadata"] = alloc(self.metadata_length)
            elif what == "bat" and "bat" not in placed:
                placed["bat"] = alloc(bat_len)
            elif what == "regions":
                for r in self.extra_regions:
                    if ("region", r["name"]) not in placed:
                        placed[("region", r["name"])] = alloc(r["length"])
            elif what == "blocks":
                for i in blocks_auto:
                    blocks_loc[i] = alloc(bs)
            elif what == "sb":
                for j in sb_auto:
                    sb_loc[j] = alloc(MiB)
            elif what == "loose":
                for lb in loose_auto:
                    lb.placed = alloc(bs)
        for key in ("log", "metadata", "bat"):
            if key not in placed:
                raise ValueError("placement_order lacks %r" % key)

        lay.update(log_offset=placed["log"], log_length=self.log_length,
                   metadata_offset=placed["metadata"], metadata_length=self.metadata_length,
                   bat_offset=placed["bat"], bat_length=bat_len)
        regions = {"bat": (GUID_BAT_REGION, placed["bat"], bat_len, True),
                   "metadata": (GUID_METADATA_REGION, placed["metadata"],
                                self.metadata_length, True)}
        for r in self.extra_regions:
            regions[r["name"]] = (r["guid"], placed[("region", r["name"])], r["length"],
                                  r["required"])
        lay["regions"] = [{"name": n, "guid": regions[n][0], "offset": regions[n][1],
                           "length": regions[n][2], "required": regions[n][3]}
                          for n in self.region_order]
        # block table
        blocks = {}
        for i in sorted(set(self.blocks) | set(blocks_loc)):
            st = self.block_state(i)
            b = self.blocks.get(i)
            if i in blocks_loc:
                fom = blocks_loc[i] // MiB
            else:
                fom = b.fom if b and isinstance(b.fom, int) else 0
            bi = payload_bat_index(i, cr)
            blocks[i] = {"state": st, "fom": fom, "file_offset": fom * MiB if fom else None,
                         "bat_index": bi, "bat_entry_offset": placed["bat"] + 8 * bi,
                         "data_in_file": i in blocks_loc}
        lay["blocks"] = blocks
        lay["sb"] = {j: {"state": sb_needed[j][0], "fom": sb_loc.get(j, 0) // MiB,
                         "file_offset": sb_loc.get(j), "bat_index": sb_bat_index(j, cr),
                         "bat_entry_offset": placed["bat"] + 8 * sb_bat_index(j, cr)}
                     for j in sb_needed}
        lay["loose_blocks"] = [{"block": lb.block, "file_offset": lb.placed,
                                "fom": lb.placed // MiB} for lb in loose]
        # metadata items
        items = {}
        mds = self.metadata
        pack_order = self.metadata_data_order or [it["name"] for it in mds]
        byname = {it["name"]: it for it in mds}
        cursor = 64 * KiB
        offs = {}
        for it in mds:
            if it["offset"] is not None:
                offs[it["name"]] = it["offset"]
        for n in pack_order:
            if n in offs or n not in byname:
                continue
            d = self._item_data(byname[n])
            offs[n] = cursor if d else 0
            cursor += len(d)
        for n in byname:
            if n not in offs:
                d = self._item_data(byname[n])
                offs[n] = cursor if d else 0
                cursor += len(d)
        for k, it in enumerate(mds):
            d = self._item_data(it)
            items[it["name"]] = {"guid": it["guid"], "offset": offs[it["name"]],
                                 "file_offset": placed["metadata"] + offs[it["name"]],
                                 "length": len(d) if it["length"] is None else it["length"],
                                 "data_length": len(d), "flags": it["flags"], "table_index": k,
                                 "entry_offset": placed["metadata"] + 32 + 32 * k}
        lay["metadata_items"] = items
        # file size
        ends = [e for (s, e) in reserved] + [MiB]
        fsz = _align_up(max(ends), MiB)
        if self.file_size is not None:
            fsz = self.file_size
        lay["file_size"] = fsz
        cur = self._current_slot_model()
        lay["current_header"] = cur
        feats = {"clean" if self._log is None or not self._log.entries else "dirty"}
        lay["features"] = feats
        return lay

    def _current_slot_model(self):
        v = [not (h.zeroed or h.corrupt or h.torn or h.signature != b"head")
             for h in self.headers]
        if v[0] and v[1]:
            s1, s2 = self.headers[0].sequence, self.headers[1].sequence
            return 1 if s1 >= s2 else 2
        return 1 if v[0] else 2 if v[1] else None

    # -- rendering ---------------------------------------------------------------------------
    def _header_bytes(self, h, lay):
        b = bytearray(4096)
        b[0:4] = h.signature
        lg = h.log_guid if h.log_guid is not None else self.log_guid
        struct.pack_into("<Q", b, 8, h.sequence & 0xFFFFFFFFFFFFFFFF)
        b[16:32] = _guid_bytes(h.file_write_guid or self.file_write_guid)
        b[32:48] = _guid_bytes(h.data_write_guid or self.data_write_guid)
        b[48:64] = _guid_bytes(lg)
        struct.pack_into("<HHI", b, 64, h.log_version, h.version,
                         lay.log_length if h.log_length is None else h.log_length)
        struct.pack_into("<Q", b, 72, lay.log_offset if h.log_offset is None else h.log_offset)
        if h.reserved:
            b[80:80 + len(h.reserved)] = h.reserved
        b = _with_crc(b)
        if h.corrupt:
            b[4] ^= 0x5A
        if h.torn:
            # second half of the 4 KiB structure did not make it: junk (torn="zero": zeros,
            # which only breaks the CRC if the new reserved bytes were non-zero -- then the
            # checksum byte is flipped as well)
            b[2048:4096] = bytes(2048) if h.torn == "zero" else _junk(2048, 0x70F17)
            if _crc_ok(b):
                b[4] ^= 1
        return b

    def _region_table_bytes(self, t, lay):
        b = bytearray(64 * KiB)
        b[0:4] = t.signature
        byname = {r["name"]: r for r in lay.regions}
        names = t.order or [r["name"] for r in lay.regions]
        ents = [(byname[n]["guid"], byname[n]["offset"], byname[n]["length"],
                 byname[n]["required"]) for n in names if n not in t.omit]
        ents += list(t.extra_entries)
        cnt = len(ents) if t.entry_count is None else t.entry_count
        struct.pack_into("<II", b, 8, cnt, t.reserved)
        for k, (g, off, ln, req) in enumerate(ents[:2047]):
            p = 16 + 32 * k
            b[p:p + 16] = _guid_bytes(g)
            struct.pack_into("<QII", b, p + 16, off, ln, int(req))
        b = _with_crc(b)
        if t.corrupt:
            b[4] ^= 0x5A
        return b

    def _render(self):
        if self._cache is not None:
            return self._cache
        lay = self._plan()
        ext = Sparse()
        bs, cr = self.block_size, self.cr
        ident = bytearray(520)
        ident[0:8] = self.ident_signature
        cb = self.creator.encode("utf-16-le")[:512] if isinstance(self.creator, str) \
            else bytes(self.creator)[:512]
        ident[8:8 + len(cb)] = cb
        ext.write(0, ident)
        for slot, h in zip((1, 2), self.headers):
            if not h.zeroed:
                ext.write(HEADER_SLOTS[slot - 1], self._header_bytes(h, lay))
        for copy, t in zip((1, 2), self.region_tables):
            if not t.zeroed:
                ext.write(REGION_TABLE_SLOTS[copy - 1], self._region_table_bytes(t, lay))
        # metadata region
        mt = bytearray(32 + 32 * len(self.metadata))
        mt[0:8] = self.metadata_signature
        struct.pack_into("<H", mt, 10, len(self.metadata) if self.metadata_entry_count is None
                         else self.metadata_entry_count)
        for k, it in enumerate(self.metadata):
            li = lay.metadata_items[it["name"]]
            p = 32 + 32 * k
            mt[p:p + 16] = _guid_bytes(it["guid"])
            struct.pack_into("<IIII", mt, p + 16, li["offset"], li["length"], it["flags"],
                             it["reserved"])
        ext.write(lay.metadata_offset, mt)
        for it in self.metadata:
            d = self._item_data(it)
            if d:
                ext.write(lay.metadata_offset + lay.metadata_items[it["name"]]["offset"], d)
        # BAT
        n = lay.bat_entries
        bat = [0] * n
        for i, info in lay.blocks.items():
            if info["bat_index"] < n:
                bat[info["bat_index"]] = info["state"] | (info["fom"] << 20)
        if self.fixed:
            pass  # all fixed blocks are in lay.blocks (allocated)
        for j, info in lay.sb.items():
            if info["bat_index"] < n:
                bat[info["bat_index"]] = info["state"] | (info["fom"] << 20)
        for idx, val in self.bat_raw.items():
            if idx >= n:
                bat.extend([0] * (idx + 1 - n))
                n = idx + 1
            bat[idx] = val
        raw = struct.pack("<%dQ" % n, *bat)[:lay.bat_length]
        # only write non-zero 4 KiB pieces (keeps huge sparse BATs cheap)
        z = bytes(SECTOR)
        for p in range(0, len(raw), SECTOR):
            piece = raw[p:p + SECTOR]
            if piece != z[:len(piece)]:
                ext.write(lay.bat_offset + p, piece)
        # payload blocks (content at the physical location)
        for i, info in lay.blocks.items():
            if not info["data_in_file"] and not (info["fom"] and info["state"] not in (6, 7)):
                continue
            b = self.blocks.get(i)
            loc = info["fom"] * MiB
            if info["state"] in (FULLY_PRESENT, PARTIALLY_PRESENT):
                if info["state"] == PARTIALLY_PRESENT and self.partial_junk:
                    ext.write(loc, _junk(bs, i))
                if b is not None:
                    for s, r in b.data.items():
                        ext.write(loc + s, r[:max(0, bs - s)])
            elif b is not None and info["fom"]:
                if b.stale == "junk":
                    ext.write(loc, _junk(bs, i + 0x1000))
                elif b.stale == "data":
                    for s, r in b.data.items():
                        ext.write(loc + s, r[:max(0, bs - s)])
        # sector bitmaps
        for j, info in lay.sb.items():
            if not info["file_offset"]:
                continue
            bm = bytearray(MiB)
            spb = bs // self.logical_sector
            for i in range(j * cr, min((j + 1) * cr, self.payload_blocks)):
                b = self.blocks.get(i)
                if b is not None and b.state == PARTIALLY_PRESENT and b.bitmap is not None:
                    first = (i - j * cr) * spb // 8
                    bm[first:first + len(b.bitmap)] = b.bitmap
            nz = bytes(bm).rstrip(b"\0")
            if nz:
                ext.write(info["file_offset"], nz)
        # extra regions
        for r in self.extra_regions:
            if r["fill"]:
                off = [x for x in lay.regions if x["name"] == r["name"]][0]["offset"]
                ext.write(off, r["fill"])
        # loose blocks
        if self._log:
            for lb in self._log.loose:
                if lb.junk:
                    ext.write(lb.placed, _junk(bs, 0x2000))
                for s, r in lb.data.items():
                    ext.write(lb.placed + s, r)
        lay["log_entries"] = []
        if self._log is not None:
            self._render_log(lay, ext)
        ext.truncate(lay.file_size)
        self._cache = (lay, ext)
        return self._cache

    def _render_log(self, lay, ext):
        lg = self._log
        L = lay.log_length
        if not L:
            return
        log = bytearray(L)
        if lg.fill is not None:
            f = lg.fill(lay) if callable(lg.fill) else lg.fill
            log[:len(f)] = f[:L]
        running = {}            # guid bytes -> {sector_offset: bytearray}
        prev = None
        run_start = None
        for e in lg.entries:
            gb = _guid_bytes(e.guid if e.guid is not None else lg.guid)
            ov = running.setdefault(gb, {})

            def cur_sector(off, ov=ov):
                return ov[off] if off in ov else bytearray(ext.read(off, SECTOR))

            def val(x):
                return x(lay) if callable(x) else x

            descs = []          # ('data', off, 4096 bytes) | ('zero', off, len)
            for off, data in e.writes:
                off, data = val(off), bytes(val(data))
                for k in range(0, len(data), SECTOR):
                    sec = data[k:k + SECTOR].ljust(SECTOR, b"\0")
                    descs.append(("data", off + k, sec))
                    ov[off + k] = bytearray(sec)
            for off, ln in e.zeros:
                off, ln = val(off), val(ln)
                descs.append(("zero", off, ln))
                for k in range(0, ln, SECTOR):
                    ov[off + k] = bytearray(SECTOR)
            touched = {}
            patches = [(val(o), bytes(val(d))) for o, d in e.patches]
            for blk, st, fom in e.bat:
                if isinstance(fom, LooseBlock):
                    fom = fom.placed // MiB
                patches.append((lay.payload_entry_offset(blk), struct.pack("<Q", st | fom << 20)))
            for off, data in patches:
                p = 0
                while p < len(data):
                    so = (off + p) // SECTOR * SECTOR
                    n = min(SECTOR - (off + p - so), len(data) - p)
                    sec = touched.get(so)
                    if sec is None:
                        sec = touched[so] = cur_sector(so)
                    sec[off + p - so:off + p - so + n] = data[p:p + n]
                    p += n
            for so in sorted(touched):
                descs.append(("data", so, bytes(touched[so])))
                ov[so] = touched[so]
            D = len(descs)
            nds = e.desc_sectors if e.desc_sectors is not None else -(-(D + 2) // 128)
            ndata = sum(1 for d in descs if d[0] == "data")
            length = SECTOR * (nds + ndata + e.pad)
            # position / tail
            if e.want_position is not None:
                pos = e.want_position % L
            elif prev is not None:
                pos = (prev.position + prev.length) % L
            else:
                pos = 0
            contiguous = prev is not None and pos == (prev.position + prev.length) % L and \
                e.seq == prev.seq + 1 and gb == prev.guid_bytes and not e.new_sequence
            if not contiguous:
                run_start = pos
            if e.tail is None:
                tail = run_start
            elif isinstance(e.tail, LogEntry):
                tail = e.tail.position
            else:
                tail = e.tail
            buf = bytearray(length)
            buf[0:4] = b"loge"
            flushed = lay.file_size if e.flushed is None else e.flushed
            last = lay.file_size if e.last is None else e.last
            struct.pack_into("<IIQII", buf, 8, length, tail, e.seq,
                             D if e.desc_count is None else e.desc_count, 0)
            buf[32:48] = gb
            struct.pack_into("<QQ", buf, 48, flushed, last)
            dpos = nds * SECTOR
            for k, d in enumerate(descs):
                p = 64 + 32 * k if k < 126 else SECTOR * (1 + (k - 126) // 128) + \
                    32 * ((k - 126) % 128)
                if p + 32 > length:
                    break
                if d[0] == "zero":
                    buf[p:p + 4] = b"zero"
                    struct.pack_into("<IQQQ", buf, p + 4, 0, d[2], d[1], e.seq)
                else:
                    sec = d[2]
                    buf[p:p + 4] = b"desc"
                    buf[p + 4:p + 8] = sec[4092:4096]          # TrailingBytes
                    buf[p + 8:p + 16] = sec[0:8]               # LeadingBytes
                    struct.pack_into("<QQ", buf, p + 16, d[1], e.seq)
                    if dpos + SECTOR <= length:
                        buf[dpos:dpos + 4] = b"data"
                        struct.pack_into("<I", buf, dpos + 4, e.seq >> 32)
                        buf[dpos + 8:dpos + 4092] = sec[8:4092]
                        struct.pack_into("<I", buf, dpos + 4092, e.seq & 0xFFFFFFFF)
                    dpos += SECTOR
            if e.mutate:
                e.mutate(buf)
            buf = _with_crc(buf)
            if e.corrupt_crc:
                buf[4] ^= 0x5A
            if e.mutate_after_crc:
                e.mutate_after_crc(buf)
            nsec = length // SECTOR
            torn = None
            if e.torn is True:
                torn = nsec - 1
            elif e.torn is not False and e.torn is not None:
                torn = e.torn
            for k in range(nsec):
                lp = (pos + k * SECTOR) % L
                if k == torn:
                    if e.torn_garbage:
                        log[lp:lp + SECTOR] = _junk(SECTOR, 0xBAD + k)
                    continue            # old contents stay
                log[lp:lp + SECTOR] = buf[k * SECTOR:(k + 1) * SECTOR]
            e.position, e.length, e.tail_value, e.guid_bytes = pos, length, tail, gb
            e.file_offset = lay.log_offset + pos
            lay["log_entries"].append({
                "position": pos, "file_offset": lay.log_offset + pos, "length": length,
                "seq": e.seq, "tail": tail, "descriptors": D, "descriptor_sectors": nds,
                "data_sectors": ndata, "guid": gb, "flushed_file_offset": flushed,
                "last_file_offset": last,
                "targets": [(d[0], d[1]) for d in descs]})
            prev = e
        z = bytes(SECTOR)
        for p in range(0, L, SECTOR):
            if log[p:p + SECTOR] != z:
                ext.write(lay.log_offset + p, log[p:p + SECTOR])

    # -- output ------------------------------------------------------------------------------
    def layout(self):
        """The layout build() would produce (without writing a file)."""
        return self._render()[0]

    def build(self, path):
        """Write the image (sparse: only non-zero runs are written) and return its Layout."""
        lay, ext = self._render()
        with open(path, "wb") as f:
            f.truncate(lay.file_size)
            for s, r in ext.items():
                if s >= lay.file_size:
                    continue
                f.seek(s)
                f.write(r[:lay.file_size - s])
        return lay

    def file_bytes(self, offset, length):
        """Bytes the built file holds at [offset, offset+length)."""
        return self._render()[1].read(offset, length)

    # -- the oracle --------------------------------------------------------------------------
    def view(self, replay=True):
        """Parse the rendered file like a correct reader would; -> _View.  Raises Reject."""
        lay, ext = self._render()
        if not hasattr(self, "_views"):
            self._views = {}
        if replay not in self._views:
            try:
                self._views[replay] = _open_view(ext, lay.file_size,
                                                 _as_parent(self.parent, replay), replay)
            except Reject as e:
                self._views[replay] = e
        v = self._views[replay]
        if isinstance(v, Reject):
            raise v.clone()
        return v

    def outcome(self, replay=True):
        """'ok' or 'reject: <reason>'."""
        try:
            self.view(replay)
            return "ok"
        except Reject as e:
            return "reject: %s" % e

    def expected(self, replay=True):
        """Virtual disk content a correct reader returns (after a correct log replay)."""
        v = self.view(replay)
        if v.virtual_size > 4 * GiB:
            raise ValueError("use expected_range()/diff_raw() for disks this large")
        return v.read(0, v.virtual_size)

    def expected_without_replay(self):
        """Content seen by a reader that ignores the log (e.g. libvhdi)."""
        return self.expected(replay=False)

    def expected_range(self, offset, length, replay=True):
        return self.view(replay).read(offset, length)

    def expected_extents(self, replay=True):
        """[(virtual_offset, length)] outside which the disk reads as zeros."""
        return self.view(replay).data_ranges()

    def diff_raw(self, path, replay=True):
        """Compare a raw image file (e.g. from `qemu-img convert -O raw`) with the expected
        content.  Efficient on sparse files.  -> None if equal, else a description."""
        return self.view(replay).diff_raw(path)

    def diff_reader(self, read, replay=True, full=None, samples=64, chunk=MiB):
        """Compare read(offset, length) -> bytes against expected content.  full=None: whole
        disk if <= 1 GiB, else all data ranges + `samples` random chunks + block/chunk
        boundaries.  -> None or a description."""
        return self.view(replay).diff_reader(read, full=full, samples=samples, chunk=chunk)


# ---------------------------------------------------------------------------------------------
# The oracle reader (spec rules from the digest; used by Image.expected)


class _Ext:
    """Read-only access to a Sparse with an overlay (for in-memory log replay)."""

    def __init__(self, base, size):
        self.base = base
        self.size = size
        self.over = None

    def read(self, off, n):
        d = self.base.read(off, n)
        if self.over is not None:
            d = bytearray(d)
            for s, ln in self.over.overlapping(off, n):
                d[s - off:s - off + ln] = self.over.read(s, ln)
            d = bytes(d)
        return d

    def runs(self, off, n):
        r = self.base.overlapping(off, n)
        if self.over is not None:
            r = r + self.over.overlapping(off, n)
        return r


def _parse_header(b):
    if b[0:4] != b"head" or not _crc_ok(b):
        return None
    seq = struct.unpack_from("<Q", b, 8)[0]
    lver, ver, llen = struct.unpack_from("<HHI", b, 64)
    loff = struct.unpack_from("<Q", b, 72)[0]
    return {"seq": seq, "fwg": bytes(b[16:32]), "dwg": bytes(b[32:48]),
            "log_guid": bytes(b[48:64]), "log_version": lver, "version": ver,
            "log_length": llen, "log_offset": loff, "raw": bytes(b)}


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def _parse_log_entry(log, pos, guid):
    """Digest §6.7.  -> dict or None."""
    L = len(log)

    def rd(p, n):
        p %= L
        if p + n <= L:
            return log[p:p + n]
        return log[p:] + log[:n - (L - p)]

    h = rd(pos, 64)
    if h[0:4] != b"loge":
        return None
    length, tail, seq, dcount, _res = struct.unpack_from("<IIQII", h, 8)
    if length == 0 or length % SECTOR or length > L or tail % SECTOR or tail >= L or seq == 0:
        return None
    if h[32:48] != guid:
        return None
    nds = -(-(dcount + 2) // 128)
    if nds > length // SECTOR:
        return None
    buf = bytearray(rd(pos, length))
    descs = []
    ndata = 0
    for k in range(dcount):
        p = 64 + 32 * k if k < 126 else SECTOR * (1 + (k - 126) // 128) + 32 * ((k - 126) % 128)
        d = buf[p:p + 32]
        sig = bytes(d[0:4])
        if sig == b"desc":
            ndata += 1
        elif sig != b"zero":
            return None
        descs.append(d)
    if nds + ndata > length // SECTOR:
        return None
    if not _crc_ok(buf):
        return None
    flushed, last = struct.unpack_from("<QQ", buf, 48)
    ops = []
    dpos = nds * SECTOR
    for d in descs:
        sig = bytes(d[0:4])
        if sig == b"zero":
            _r, zlen, foff, dseq = struct.unpack_from("<IQQQ", d, 4)
            if dseq != seq or foff % SECTOR or zlen % SECTOR:
                return None
            ops.append(("zero", foff, zlen))
        else:
            foff, dseq = struct.unpack_from("<QQ", d, 16)
            if dseq != seq or foff % SECTOR:
                return None
            s = buf[dpos:dpos + SECTOR]
            hi, = struct.unpack_from("<I", s, 4)
            lo, = struct.unpack_from("<I", s, 4092)
            if s[0:4] != b"data" or (hi << 32 | lo) != seq:
                return None
            sector = bytes(d[8:16]) + bytes(s[8:4092]) + bytes(d[4:8])
            ops.append(("data", foff, sector))
            dpos += SECTOR
    return {"pos": pos, "length": length, "tail": tail, "seq": seq, "flushed": flushed,
            "last": last, "ops": ops}


def find_active_sequence(log, guid):
    """Digest §6.8/6.9: every 4 KiB offset is tried as a sequence start; a sequence is extended
    while the next entry (immediately following, modulo the log) is valid with seq+1; it counts
    if the head's Tail is the start of one of its entries; the one with the highest head
    sequence number wins.  Returns the entries tail..head, or None."""
    L = len(log)
    cache = {}

    def entry(p):
        if p not in cache:
            cache[p] = _parse_log_entry(log, p, guid)
        return cache[p]

    best = None
    for start in range(0, L, SECTOR):
        e = entry(start)
        if e is None:
            continue
        chain = [e]
        total = e["length"]
        while True:
            p = (chain[-1]["pos"] + chain[-1]["length"]) % L
            n = entry(p)
            if n is None or n["seq"] != chain[-1]["seq"] + 1 or total + n["length"] > L:
                break
            chain.append(n)
            total += n["length"]
        head = chain[-1]
        idx = [k for k, c in enumerate(chain) if c["pos"] == head["tail"]]
        if not idx:
            continue
        active = chain[idx[0]:]
        if best is None or head["seq"] > best[-1]["seq"]:
            best = active
    return best


class _View:
    pass


class _ImageParent:
    """A model Image used as a parent: reads what a reader with the same replay choice sees."""

    def __init__(self, img, replay):
        self.img, self.replay = img, replay

    def read(self, off, n):
        return self.img.expected_range(off, n, replay=self.replay)

    def data_ranges(self):
        return self.img.expected_extents(replay=self.replay)


class _LegacyParent:
    """Any object with expected_range(off, n) and expected_extents()."""

    def __init__(self, obj):
        self.obj = obj

    def read(self, off, n):
        return self.obj.expected_range(off, n)

    def data_ranges(self):
        return self.obj.expected_extents()


def _as_parent(p, replay):
    """Parent of a differencing view: None (reads zeros), an Image, a view, or a legacy
    object with expected_range/expected_extents."""
    if p is None or p is False:
        return None
    if isinstance(p, Image):
        return _ImageParent(p, replay)
    if isinstance(p, _View):
        return p
    return _LegacyParent(p)


def _open_view(base, file_size, parent, replay):
    ext = _Ext(base, file_size)
    if ext.read(0, 8) != b"vhdxfile":
        raise Reject("file type identifier signature")
    if file_size < MiB:
        raise Reject("file shorter than the header section")
    hs = [_parse_header(ext.read(o, 4096)) for o in HEADER_SLOTS]
    if hs[0] and hs[1]:
        if hs[0]["seq"] > hs[1]["seq"]:
            cur = hs[0]
        elif hs[1]["seq"] > hs[0]["seq"]:
            cur = hs[1]
        elif hs[0]["raw"][8:80] == hs[1]["raw"][8:80]:
            cur = hs[0]                  # equal & identical (Disk2vhd): accept
        else:
            raise Reject("two valid headers with equal sequence numbers but different contents")
    else:
        cur = hs[0] or hs[1]
    if cur is None:
        raise Reject("no valid header")
    if cur["version"] != 1:
        raise Reject("header version %d" % cur["version"])
    loff, llen = cur["log_offset"], cur["log_length"]
    if loff % MiB or llen % MiB:
        raise Reject("log offset/length not 1 MiB aligned")
    if loff < MiB:
        raise Reject("log inside the header section")
    if loff + llen >= 1 << 64:
        raise Reject("log offset+length overflows u64")
    dirty = cur["log_guid"] != bytes(16)
    if dirty and cur["log_version"] != 0:
        raise Reject("LogVersion %d with non-zero LogGuid" % cur["log_version"])
    if dirty and replay:
        if llen == 0:
            raise Reject("non-zero LogGuid but empty log")
        if loff + llen > file_size:
            raise Reject("log in use but extends past EOF")
        seq = find_active_sequence(ext.read(loff, llen), cur["log_guid"])
        if seq is None:
            raise Reject("non-zero LogGuid but no valid log sequence")
        if file_size < seq[-1]["flushed"]:
            raise Reject("file shorter than the head entry's FlushedFileOffset")
        over = Sparse()
        size = file_size
        for e in seq:
            for op in e["ops"]:
                if op[0] == "data":
                    over.write(op[1], op[2])
                    size = max(size, op[1] + SECTOR)
                else:
                    over.write(op[1], bytes(op[2]))
                    size = max(size, op[1] + op[2])
        size = max(size, seq[-1]["last"])
        ext.over = over
        ext.size = file_size = size
    # region table
    rt = None
    for o in REGION_TABLE_SLOTS:
        b = ext.read(o, 64 * KiB)
        if b[0:4] == b"regi" and _crc_ok(b):
            rt = b
            break
    if rt is None:
        raise Reject("no valid region table")
    cnt = struct.unpack_from("<I", rt, 8)[0]
    if cnt > 2047:
        raise Reject("region table entry count %d" % cnt)
    regions = []
    seen = set()
    logiv = (loff, loff + llen)
    for k in range(cnt):
        p = 16 + 32 * k
        g = bytes(rt[p:p + 16])
        off, ln, req = struct.unpack_from("<QII", rt, p + 16)
        if g in seen:
            raise Reject("duplicate region")
        seen.add(g)
        if off % MiB or ln % MiB or off < MiB:
            raise Reject("region offset/length alignment")
        if off + ln >= 1 << 64:
            raise Reject("region offset+length overflows u64")
        iv = (off, off + ln)
        if llen and _overlap(iv, logiv):
            raise Reject("region overlaps the log")
        for r in regions:
            if _overlap(iv, r[1]):
                raise Reject("regions overlap")
        if g not in (GUID_BAT_REGION.bytes_le, GUID_METADATA_REGION.bytes_le) and req & 1:
            raise Reject("unknown required region")
        regions.append((g, iv))
    rmap = {g: iv for g, iv in regions}
    if GUID_BAT_REGION.bytes_le not in rmap or GUID_METADATA_REGION.bytes_le not in rmap:
        raise Reject("BAT or metadata region missing")
    moff, mend = rmap[GUID_METADATA_REGION.bytes_le]
    if mend > file_size:
        raise Reject("metadata region past EOF")
    mt = ext.read(moff, 64 * KiB)
    if mt[0:8] != b"metadata":
        raise Reject("metadata table signature")
    mcnt = struct.unpack_from("<H", mt, 10)[0]
    if mcnt > 2047:
        raise Reject("metadata entry count")
    items = {}
    ivs = []
    users = 0
    mlen = mend - moff
    for k in range(mcnt):
        p = 32 + 32 * k
        g = bytes(mt[p:p + 16])
        off, ln, fl, _r = struct.unpack_from("<IIII", mt, p + 16)
        if fl & MD_IS_USER:
            users += 1
        key = (g, fl & 1)
        if key in items:
            raise Reject("duplicate metadata item")
        if ln == 0:
            if off != 0:
                raise Reject("zero-length item with non-zero offset")
        else:
            if off < 64 * KiB or ln > MiB or off + ln > mlen:
                raise Reject("metadata item out of bounds")
            iv = (off, off + ln)
            if any(_overlap(iv, x) for x in ivs):
                raise Reject("metadata items overlap")
            ivs.append(iv)
        uid = uuid.UUID(bytes_le=g)
        if (fl & MD_IS_USER or uid not in _ITEM_NAME) and fl & MD_IS_REQUIRED:
            raise Reject("unknown required metadata item")
        items[key] = (off, ln)
    if users > 1024:
        raise Reject("more than 1024 user items")

    def item(gu, size=None):
        v = items.get((gu.bytes_le, 0))
        if v is None:
            raise Reject("missing metadata item %s" % _ITEM_NAME[gu])
        if size is not None and v[1] != size:
            raise Reject("metadata item %s has length %d" % (_ITEM_NAME[gu], v[1]))
        return ext.read(moff + v[0], v[1])

    bs, fpflags = struct.unpack("<II", item(ITEM_FILE_PARAMETERS, 8))
    vsize, = struct.unpack("<Q", item(ITEM_VIRTUAL_DISK_SIZE, 8))
    lss, = struct.unpack("<I", item(ITEM_LOGICAL_SECTOR_SIZE, 4))
    pss, = struct.unpack("<I", item(ITEM_PHYSICAL_SECTOR_SIZE, 4))
    item(ITEM_VIRTUAL_DISK_ID, 16)
    if not (_is_pow2(bs) and MiB <= bs <= 256 * MiB):
        raise Reject("block size %d" % bs)
    if lss not in (512, 4096) or pss not in (512, 4096):
        raise Reject("sector size")
    if vsize == 0 or vsize % lss or vsize > MAX_VIRTUAL_SIZE:
        raise Reject("virtual disk size %d" % vsize)
    diff = bool(fpflags & 2)
    fixed = bool(fpflags & 1) and not diff
    kv = []
    if diff:
        loc = item(ITEM_PARENT_LOCATOR)
        try:
            ltype, kv = decode_parent_locator(loc)
        except Reject as e:
            raise Reject(str(e), reason="locator") from None
        if ltype != LOCATOR_TYPE_VHDX:
            raise Reject("unknown parent locator type %s" % ltype, reason="locator")
        keys = [k for k, _ in kv]
        if len(set(keys)) != len(keys):
            raise Reject("parent locator has a duplicate key", reason="locator")
        if "parent_linkage" not in keys:
            raise Reject("parent locator lacks parent_linkage", reason="locator")
        if not set(PATH_KEYS) & set(keys):
            raise Reject("parent locator has none of relative_path, volume_path, "
                         "absolute_win32_path", reason="locator")
    cr = chunk_ratio(bs, lss)
    pb = -(-vsize // bs)
    nbat = bat_entry_count(vsize, bs, lss, diff)
    boff, bend = rmap[GUID_BAT_REGION.bytes_le]
    if bend - boff < 8 * nbat:
        raise Reject("BAT region too small")
    if boff + 8 * nbat > file_size:
        raise Reject("BAT past EOF")
    raw = ext.read(boff, 8 * nbat)
    bat = list(struct.unpack("<%dQ" % nbat, raw))
    # structural intervals
    occupied = [(0, MiB, "header section")]
    if llen:
        occupied.append((loff, loff + llen, "log"))
    for g, iv in regions:
        occupied.append((iv[0], iv[1], "region"))
    blocks = []
    for idx, e in enumerate(bat):
        is_sb = idx % (cr + 1) == cr
        st = e & 7
        if e & BAT_RESERVED_MASK:
            raise Reject("BAT entry %d reserved bits" % idx)
        if is_sb:
            if st not in (SB_NOT_PRESENT, SB_PRESENT):
                raise Reject("BAT entry %d: bad sector-bitmap state %d" % (idx, st),
                             reason="bat")
            if st == SB_PRESENT and diff:
                blocks.append(((e & BAT_OFFSET_MASK), MiB, idx))
            continue
        if st in (4, 5) or (st == PARTIALLY_PRESENT and not diff):
            raise Reject("BAT entry %d: state %s invalid here" % (idx, STATE_NAMES[st]))
        if st in (FULLY_PRESENT, PARTIALLY_PRESENT):
            blocks.append(((e & BAT_OFFSET_MASK), bs, idx))
    for off, ln, idx in blocks:
        if off < MiB:
            raise Reject("BAT entry %d points into the header section" % idx,
                         reason="overlap")
        for s, en, what in occupied:
            if _overlap((off, off + ln), (s, en)):
                raise Reject("BAT entry %d overlaps the %s" % (idx, what), reason="overlap")
    srt = sorted(blocks)
    for a, b in zip(srt, srt[1:]):
        if a[0] + a[1] > b[0]:
            raise Reject("BAT entries %d and %d overlap" % (a[2], b[2]), reason="overlap")
    for off, ln, idx in blocks:
        if idx % (cr + 1) == cr:
            if off + ln > file_size:
                raise Reject("sector bitmap block past EOF", reason="bitmap")
            continue
        i = idx - idx // (cr + 1)
        need = min(bs, vsize - i * bs)            # part inside the virtual disk
        if off + need > file_size:
            raise Reject("payload block %d extends past EOF" % i)
    if diff:
        for i in range(pb):
            if bat[payload_bat_index(i, cr)] & 7 == PARTIALLY_PRESENT and \
                    bat[sb_bat_index(i // cr, cr)] & 7 != SB_PRESENT:
                raise Reject("PARTIALLY_PRESENT block %d without sector bitmap" % i,
                             reason="bitmap")
    v = _ViewImpl()
    v.__dict__.update(ext=ext, virtual_size=vsize, block_size=bs, logical_sector=lss,
                      physical_sector=pss, chunk_ratio=cr, bat=bat, differencing=diff,
                      fixed=fixed, parent=parent, payload_blocks=pb, file_size=file_size,
                      current_header=cur, replay=replay, locator_entries=kv,
                      locator=dict(kv), path=None, chain=None)
    return v


class _ViewImpl(_View):
    def _parent_read(self, off, n):
        if self.parent is None:
            return bytes(n)
        return self.parent.read(off, n)

    def read(self, off, n):
        if off < 0 or off + n > self.virtual_size:
            raise ValueError("read beyond the virtual disk")
        out = bytearray(n)
        bs, cr, lss = self.block_size, self.chunk_ratio, self.logical_sector
        pos = off
        while pos < off + n:
            i, bo = divmod(pos, bs)
            take = min(bs - bo, off + n - pos)
            e = self.bat[payload_bat_index(i, cr)]
            st, loc = e & 7, e & BAT_OFFSET_MASK
            o = pos - off
            if st == FULLY_PRESENT:
                out[o:o + take] = self.ext.read(loc + bo, take)
            elif st == PARTIALLY_PRESENT:
                # sector by sector through the chunk's bitmap (digest §7: bit 0 of byte 0 is
                # the chunk's first sector; 1 = this file), runs of equal bits read at once
                sbloc = self.bat[sb_bat_index(i // cr, cr)] & BAT_OFFSET_MASK
                vb = i * bs
                s0, s1 = (pos - vb) // lss, (pos + take - vb - 1) // lss + 1
                first = (i % cr) * (bs // lss) + s0          # bit index within the chunk
                nbytes = ((first + s1 - s0 - 1) >> 3) - (first >> 3) + 1
                bits = int.from_bytes(self.ext.read(sbloc + (first >> 3), nbytes),
                                      "little") >> (first & 7)
                s = s0
                while s < s1:
                    bit = bits >> (s - s0) & 1
                    e = s + 1
                    while e < s1 and bits >> (e - s0) & 1 == bit:
                        e += 1
                    a, z = max(pos, vb + s * lss), min(pos + take, vb + e * lss)
                    if bit:
                        out[a - off:z - off] = self.ext.read(loc + a - vb, z - a)
                    else:
                        out[a - off:z - off] = self._parent_read(a, z - a)
                    s = e
            elif st == NOT_PRESENT and self.differencing:
                out[o:o + take] = self._parent_read(pos, take)
            pos += take
        return bytes(out)

    def data_ranges(self):
        """Merged [(virtual_offset, length)] that may be non-zero."""
        res = []
        bs, cr = self.block_size, self.chunk_ratio
        pranges = None
        for i in range(self.payload_blocks):
            e = self.bat[payload_bat_index(i, cr)]
            st, loc = e & 7, e & BAT_OFFSET_MASK
            vb = i * bs
            vlen = min(bs, self.virtual_size - vb)
            if st == FULLY_PRESENT:
                for s, ln in self.ext.runs(loc, vlen):
                    res.append((vb + s - loc, ln))
            elif st == PARTIALLY_PRESENT or (st == NOT_PRESENT and self.differencing):
                if st == PARTIALLY_PRESENT:
                    res.append((vb, vlen))
                elif self.parent is not None:
                    if pranges is None:
                        pranges = self.parent.data_ranges()
                    for s, ln in pranges:
                        a, b = max(s, vb), min(s + ln, vb + vlen)
                        if a < b:
                            res.append((a, b - a))
        res.sort()
        merged = []
        for s, ln in res:
            if merged and s <= merged[-1][0] + merged[-1][1]:
                ps, pl = merged[-1]
                merged[-1] = (ps, max(pl, s + ln - ps))
            else:
                merged.append((s, ln))
        return merged

    def diff_raw(self, path):
        size = os.path.getsize(path)
        if size != self.virtual_size:
            return "raw size %d != virtual size %d" % (size, self.virtual_size)
        ranges = self.data_ranges()
        with open(path, "rb") as f:
            fd = f.fileno()

            def cmp(off, n, expect_zero):
                p = off
                while p < off + n:
                    k = min(4 * MiB, off + n - p)
                    f.seek(p)
                    got = f.read(k)
                    exp = bytes(k) if expect_zero else self.read(p, k)
                    if got != exp:
                        bad = next(x for x in range(k) if got[x:x + 1] != exp[x:x + 1])
                        return "mismatch at virtual offset %#x (got %r, want %r)" % (
                            p + bad, got[bad:bad + 8], exp[bad:bad + 8])
                    p += k
                return None

            for s, ln in ranges:
                r = cmp(s, ln, False)
                if r:
                    return r
            # every data region of the raw file outside `ranges` must be zero
            pos = 0
            while pos < size:
                try:
                    d = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:
                        break
                    raise
                h = os.lseek(fd, d, os.SEEK_HOLE)
                p = d
                for s, ln in ranges:
                    if s + ln <= p or s >= h:
                        continue
                    if s > p:
                        r = cmp(p, s - p, True)
                        if r:
                            return r
                    p = max(p, s + ln)
                if p < h:
                    r = cmp(p, h - p, True)
                    if r:
                        return r
                pos = h
        return None

    def diff_reader(self, read, full=None, samples=64, chunk=MiB):
        vs = self.virtual_size
        if full is None:
            full = vs <= GiB
        if full:
            windows = [(p, min(chunk, vs - p)) for p in range(0, vs, chunk)]
        else:
            windows = []
            for s, ln in self.data_ranges():
                windows += [(p, min(chunk, s + ln - p)) for p in range(s, s + ln, chunk)]
            r = random.Random(vs)
            for _ in range(samples):
                p = r.randrange(0, vs, self.logical_sector)
                windows.append((p, min(chunk, vs - p)))
            step = self.block_size
            for b in range(0, vs, step):
                if b % (self.block_size * self.chunk_ratio) == 0 or b + step >= vs:
                    lo = max(0, b - 8192)
                    windows.append((lo, min(16384, vs - lo)))
            windows.append((max(0, vs - 4096), min(4096, vs)))
        for p, n in windows:
            got = bytes(read(p, n))
            exp = self.read(p, n)
            if got != exp:
                bad = next((x for x in range(min(len(got), n)) if got[x] != exp[x]), len(got))
                return "mismatch at virtual offset %#x (len got %d want %d; got %r want %r)" % (
                    p + bad, len(got), n, got[bad:bad + 8], exp[bad:bad + 8])
        return None

    def sha256(self, chunk=4 * MiB):
        """SHA-256 (hex) of the whole virtual disk; holes are hashed without being read."""
        h = hashlib.sha256()
        zero = memoryview(bytes(chunk))
        pos = 0
        for s, ln in self.data_ranges() + [(self.virtual_size, 0)]:
            while pos < s:
                k = min(chunk, s - pos)
                h.update(zero[:k])
                pos += k
            end = s + ln
            while pos < end:
                k = min(chunk, end - pos)
                h.update(self.read(pos, k))
                pos += k
        return h.hexdigest()

    def write_raw(self, path):
        """Write the virtual disk to a (sparse) raw file."""
        with open(path, "wb") as f:
            f.truncate(self.virtual_size)
            for s, ln in self.data_ranges():
                for p in range(s, s + ln, 16 * MiB):
                    f.seek(p)
                    f.write(self.read(p, min(16 * MiB, s + ln - p)))


def load_file(path):
    """Read a file into a Sparse (holes skipped via SEEK_DATA).  -> (Sparse, size)."""
    sp = Sparse()
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            p = d
            while p < h:
                n = min(64 * MiB, h - p)
                f.seek(p)
                chunk = f.read(n)
                # keep the model sparse: drop all-zero 64 KiB pieces
                for q in range(0, len(chunk), 64 * KiB):
                    piece = chunk[q:q + 64 * KiB]
                    if piece.count(0) != len(piece):
                        sp.write(p + q, piece)
                p += n
            pos = h
    return sp, size


def copy_sparse(src, dst):
    """Copy a file keeping its holes (shutil.copy would write every zero)."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        g.truncate(size)
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            f.seek(d)
            g.seek(d)
            p = d
            while p < h:
                chunk = f.read(min(16 * MiB, h - p))
                g.write(chunk)
                p += len(chunk)
            pos = h


def open_file(path, replay=True, parent=None, max_depth=None, volume_root=None,
              resolve=True):
    """The oracle reader applied to an existing file (e.g. one written by the C code or
    corrupted by apply_corruption).  -> view with .read(off, n), .virtual_size, .block_size,
    .logical_sector, .physical_sector, .bat, .data_ranges(), .diff_raw(path),
    .diff_reader(read), .sha256(), .write_raw(path).  Raises Reject.

    Differencing files: with parent=None the parent chain is resolved on disk by
    open_chain() (locator keys in the spec's order, linkage, sector size, depth, cycles; see
    there); the view then has .chain and .parent.  parent=<Image or view> uses that model
    as the parent instead, without checks; resolve=False reads NOT_PRESENT blocks as zeros
    (the file alone)."""
    if parent is None and resolve:
        return open_chain(path, replay=replay, max_depth=max_depth, volume_root=volume_root)
    sp, size = load_file(path)
    v = _open_view(sp, size, _as_parent(parent, replay), replay)
    v.path = path
    return v


# ---------------------------------------------------------------------------------------------
# Differencing chains (digest §7, §8.4, §9.8)
#
# Rules the oracle applies where the digest leaves a choice (keep the C reader consistent):
#   * depth = number of files in the chain, the child included (a flat disk has depth 1);
#     a chain of max_depth files opens, a differencing file at position max_depth (whose
#     parent would be file max_depth + 1) is refused with reason 'depth'.
#   * locator keys are tried in the order relative_path, volume_path, absolute_win32_path.
#     relative_path is resolved from the child's directory ('.' and '..' components;
#     separators '\' or '/'; a rooted or drive path there is unusable).  For volume_path and
#     absolute_win32_path the volume part (\\?\Volume{...}\, \\?\C:\, C:\, \\?\UNC\srv\share\,
#     \\srv\share\, or a leading '\') is dropped and the rest is resolved from `volume_root`
#     (default: the child's own directory -- hosts and firmware have no drive letters or
#     volume GUIDs; tests that model a volume pass the directory that plays its root).
#     Names are matched exactly (no case folding).
#   * the first candidate that exists as a file is the parent; a later key is not tried when
#     that file fails the checks below.
#   * linkage: the parent's current-header DataWriteGuid equals parent_linkage, or equals a
#     non-zero parent_linkage2.  GUID text with or without braces, any case.  A
#     parent_linkage that is not GUID text refuses the child ('locator'); a malformed
#     parent_linkage2 is ignored.
#   * parent and child: same logical sector size ('sector-size') and same virtual size
#     ('virtual-size'); the block sizes may differ.
#   * a file met twice (same device and inode) is a cycle ('cycle').
#   * a parent that is not a valid VHDX (or fails its own checks) refuses the chain
#     ('parent-invalid'); the parent's dirty log is replayed in memory like the child's.
#   * reads: FULLY_PRESENT from the file (bitmap not consulted), PARTIALLY_PRESENT per sector
#     bit, NOT_PRESENT from the parent, ZERO / UNMAPPED / UNDEFINED as zeros.

DEFAULT_MAX_DEPTH = 256

_GUID_RE = None


def parse_guid_text(text):
    """'{xxxxxxxx-xxxx-...}' (braces optional, any case) -> uuid.UUID, else None."""
    global _GUID_RE
    if _GUID_RE is None:
        import re
        _GUID_RE = re.compile(r"^\{?([0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12})\}?$")
    m = _GUID_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None or (text.strip().startswith("{") != text.strip().endswith("}")):
        return None
    return uuid.UUID(m.group(1))


def _clean_parts(parts, allow_up):
    out = []
    for c in parts:
        if c in ("", "."):
            continue
        if c == "..":
            if out and out[-1] != "..":
                out.pop()
            elif allow_up:
                out.append("..")
            continue
        out.append(c)
    return out


def locator_path_parts(key, value):
    """Path components a reader resolves for locator key `key` (see the rules above).
    relative_path -> components relative to the child's directory (may start with '..');
    volume_path / absolute_win32_path -> components below the volume root.  None if the
    value is not a form that key can take."""
    import re
    v = value.replace("/", "\\")
    if key == "relative_path":
        if v.startswith("\\") or re.match(r"^[A-Za-z]:", v):
            return None
        parts = _clean_parts(v.split("\\"), True)
        return parts if parts and parts[-1] != ".." else None
    rest = None
    if v.startswith("\\\\?\\") or v.startswith("\\\\.\\"):
        t = v[4:]
        if t[:4].upper() == "UNC\\":
            rest = t[4:].split("\\")[2:]
        elif re.match(r"^Volume\{[0-9A-Fa-f-]{36}\}(\\|$)", t, re.I):
            rest = t.split("\\")[1:]
        elif re.match(r"^[A-Za-z]:(\\|$)", t):
            rest = t[3:].split("\\")
    elif v.startswith("\\\\"):
        rest = v[2:].split("\\")[2:]
    elif re.match(r"^[A-Za-z]:\\", v):
        rest = v[3:].split("\\")
    elif v.startswith("\\"):
        rest = v[1:].split("\\")
    if rest is None:
        return None
    parts = _clean_parts(rest, False)
    return parts or None


def resolve_locator_path(child_path, key, value, volume_root=None):
    """Host path a reader tries for one locator entry, or None if unusable."""
    parts = locator_path_parts(key, value)
    if parts is None:
        return None
    if key == "relative_path" or volume_root is None:
        base = os.path.dirname(os.path.abspath(child_path))
    else:
        base = os.path.abspath(volume_root)
    return os.path.normpath(os.path.join(base, *parts))


def _file_identity(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _open_single(path, replay):
    try:
        sp, size = load_file(path)
    except OSError as e:
        raise Reject("%s: %s" % (path, e.strerror or e), reason="io", child=path) from None
    v = _open_view(sp, size, None, replay)
    v.path = path
    return v


def open_chain(path, replay=True, max_depth=None, volume_root=None):
    """Open `path` and, if it is a differencing file, its parents as a correct reader must
    (rules above).  -> the child's view; .parent is the parent's view and .chain lists every
    file, child first: {path, depth, differencing, key, locator_value, linkage, tried}
    (key/linkage: how this file's parent was found and verified).  Raises Reject with
    .reason, .child (the file whose parent failed) and .tried."""
    max_depth = DEFAULT_MAX_DEPTH if max_depth is None else max_depth
    if max_depth > 200 and sys.getrecursionlimit() < 20 * max_depth:
        sys.setrecursionlimit(20 * max_depth)      # reads recurse once per level
    top = _open_single(path, replay)
    seen = {_file_identity(path): path}
    info = []
    cur = top
    while True:
        link = {"path": cur.path, "depth": len(info) + 1, "differencing": cur.differencing,
                "key": None, "locator_value": None, "linkage": None, "tried": []}
        info.append(link)
        if not cur.differencing:
            break
        child = cur.path
        loc = cur.locator
        l1 = parse_guid_text(loc["parent_linkage"])
        if l1 is None:
            raise Reject("%s: parent_linkage %r is not a GUID" % (child, loc["parent_linkage"]),
                         reason="locator", child=child)
        l2 = parse_guid_text(loc["parent_linkage2"]) if "parent_linkage2" in loc else None
        if len(info) >= max_depth:
            raise Reject("%s: chain deeper than %d files" % (child, max_depth),
                         reason="depth", child=child)
        tried, found = [], None
        for key in PATH_KEYS:
            if key not in loc:
                continue
            cand = resolve_locator_path(child, key, loc[key], volume_root)
            tried.append((key, cand if cand is not None else loc[key]))
            if cand is not None and os.path.isfile(cand):
                found = (key, cand)
                break
        link["tried"] = tried
        if found is None:
            raise Reject("%s: parent not found (tried %s)" % (child, ", ".join(
                "%s %s" % t for t in tried)), reason="parent-missing", child=child, tried=tried)
        key, ppath = found
        link["key"], link["locator_value"] = key, loc[key]
        ident = _file_identity(ppath)
        if ident in seen:
            raise Reject("%s: parent %s (from %s) is already in the chain: cycle" % (
                child, ppath, key), reason="cycle", child=child, tried=tried)
        try:
            pv = _open_single(ppath, replay)
        except Reject as e:
            raise Reject("%s: parent %s (from %s): %s" % (child, ppath, key, e),
                         reason="parent-invalid", child=child, tried=tried) from None
        dwg = uuid.UUID(bytes_le=pv.current_header["dwg"])
        if dwg == l1:
            link["linkage"] = "parent_linkage"
        elif l2 is not None and l2.int and dwg == l2:
            link["linkage"] = "parent_linkage2"
        else:
            raise Reject("%s: parent %s (from %s): DataWriteGuid {%s} matches neither "
                         "parent_linkage %s nor parent_linkage2 %s" % (
                             child, ppath, key, dwg, loc["parent_linkage"],
                             loc.get("parent_linkage2", "(absent)")),
                         reason="linkage", child=child, tried=tried)
        if pv.logical_sector != cur.logical_sector:
            raise Reject("%s: parent %s has %d-byte logical sectors, the child %d" % (
                child, ppath, pv.logical_sector, cur.logical_sector), reason="sector-size",
                child=child, tried=tried)
        if pv.virtual_size != cur.virtual_size:
            raise Reject("%s: parent %s has virtual size %d, the child %d" % (
                child, ppath, pv.virtual_size, cur.virtual_size), reason="virtual-size",
                child=child, tried=tried)
        cur.parent = pv
        seen[ident] = ppath
        cur = pv
    top.chain = info
    return top


# -- writing chains -------------------------------------------------------------------------


def make_child(parent, block_size=None, seed=None, **kw):
    """A differencing Image over `parent` (an Image): same virtual size, logical and
    physical sector size and Virtual Disk ID (IsVirtualDisk items are copied on fork,
    digest §9.2); all blocks NOT_PRESENT.  The locator is the default one until a Chain
    sets it.  kw: further Image arguments."""
    if seed is None:
        seed = parent.rng.getrandbits(32)
    return Image(parent.virtual_size, block_size=block_size or parent.block_size,
                 logical_sector=parent.logical_sector, physical_sector=parent.physical_sector,
                 virtual_disk_id=parent.virtual_disk_id, parent=parent, seed=seed, **kw)


def stamp_sectors(img, tag, offset=0, length=None, partial=False):
    """Write `tag` (<= 8 bytes, padded with '!') + the LBA (u64 LE) at the start of every
    logical sector of [offset, offset+length) -- like the README's stand-in parent.  The
    blocks become FULLY_PRESENT, or with partial=True (differencing) PARTIALLY_PRESENT with
    those sectors' bits set."""
    lss = img.logical_sector
    if length is None:
        length = img.virtual_size - offset
    t = tag.encode() if isinstance(tag, str) else bytes(tag)
    t = t[:8].ljust(8, b"!")
    pos = offset
    while pos < offset + length:
        n = min(4 * MiB, offset + length - pos)
        buf = bytearray(n)
        for s in range(0, n, lss):
            buf[s:s + 16] = t + struct.pack("<Q", (pos + s) // lss)
        (img.write_partial if partial else img.write)(pos, buf)
        pos += n


EVERY_STATE = ("partial", "full", "not_present", "zero", "unmapped", "undefined",
               "partial_all_set", "partial_none_set")


def fill_every_state(img, tag="CHILD", states=EVERY_STATE, blocks=None):
    """Give a differencing Image one block in each state, cycling through `states` over
    `blocks` (default: every block), and return {block: state name}.
      partial           sectors 1-2, 7-8 (a run across a bitmap byte) and the last sector
                        stamped with `tag`; the other sectors come from the parent; the
                        child's copies of them hold junk (partial_junk)
      full              FULLY_PRESENT: a stamp in every 8th sector, zeros elsewhere
      not_present       read from the parent
      zero / unmapped / undefined   read as zeros (unmapped/undefined keep a stale pointer
                        at junk / at old data)
      partial_all_set   PARTIALLY_PRESENT with every bit set
      partial_none_set  PARTIALLY_PRESENT with no bit set (reads the parent entirely)"""
    if not img.differencing:
        raise ValueError("fill_every_state needs a differencing image")
    bs, lss = img.block_size, img.logical_sector
    img.partial_junk = True
    blocks = list(range(img.payload_blocks)) if blocks is None else list(blocks)
    res = {}
    for k, i in enumerate(blocks):
        st = states[k % len(states)]
        vb = i * bs
        vlen = min(bs, img.virtual_size - vb)
        nsec = vlen // lss
        if st == "partial":
            for s0, n in ((1, 2), (7, 2), (nsec - 1, 1)):
                if s0 + n <= nsec:
                    stamp_sectors(img, tag, vb + s0 * lss, n * lss, partial=True)
        elif st == "full":
            buf = bytearray(vlen)
            t = tag.encode()[:8].ljust(8, b"!")
            for s in range(0, nsec, 8):
                buf[s * lss:s * lss + 16] = t + struct.pack("<Q", vb // lss + s)
            img.write(vb, buf)
        elif st == "zero":
            img.set_block_state(i, ZERO)
        elif st == "unmapped":
            img.set_block_state(i, UNMAPPED, file_offset_mb="auto", stale="junk")
        elif st == "undefined":
            img.write(vb, b"OLD DATA" * (lss // 8))
            img.set_block_state(i, UNDEFINED, file_offset_mb="auto", stale="data")
        elif st == "partial_all_set":
            stamp_sectors(img, tag, vb, vlen, partial=True)
        elif st == "partial_none_set":
            img.set_block_state(i, PARTIALLY_PRESENT)
        elif st != "not_present":
            raise ValueError("unknown state %r" % st)
        res[i] = st
    return res


HYPERV_KEY_ORDER = ("parent_linkage", "absolute_win32_path", "relative_path", "volume_path",
                    "parent_linkage2")
SPEC_KEY_ORDER = ("parent_linkage", "parent_linkage2", "relative_path", "volume_path",
                  "absolute_win32_path")


def _win_join(parts):
    return "\\".join(parts)


class Chain:
    """A chain of VHDX files written into one directory tree (the 'volume').

    Chain(images, names=None, dirs=None, locators=None, volume_guid=None, drive="C")
      images    [base, child1, child2, ...]: images[k] (k >= 1) is differencing over
                images[k-1] (made by make_child(), or any Image: its parent is set here)
      names     file names (default base.vhdx, diff1.avhdx, ...)
      dirs      directory of each file below the volume root, '/'-separated ('' = root)
      locators  one dict per child (or one dict for all) of locator_entries() options
    Locators are consistent with the names and directories as soon as the Chain exists, so
    images[-1].expected() is the content of the whole chain before anything is built."""

    def __init__(self, images, names=None, dirs=None, locators=None, volume_guid=None,
                 drive="C"):
        self.images = list(images)
        n = len(self.images)
        self.names = list(names) if names else \
            ["base.vhdx"] + ["diff%d.avhdx" % k for k in range(1, n)]
        self.dirs = list(dirs) if dirs else [""] * n
        self.volume_guid = volume_guid or self.images[0]._uuid()
        self.drive = drive
        self.volume_root = None
        self.paths = None
        if locators is None or isinstance(locators, dict):
            locators = [dict(locators or {}) for _ in range(n - 1)]
        self.styles = [None] + [dict(x or {}) for x in locators]
        for k in range(1, n):
            self.relink(k)

    @property
    def top(self):
        return self.images[-1]

    def _parts(self, k):
        return [c for c in self.dirs[k].split("/") if c]

    def volume_relative(self, k):
        """File k's path below the volume root, Windows form (no leading separator)."""
        return _win_join(self._parts(k) + [self.names[k]])

    def relative(self, k, dot=True):
        """relative_path from file k to its parent k-1, as Hyper-V writes it ('.\\name' in
        the same directory, '..\\dir\\name' otherwise)."""
        a, b = self._parts(k), self._parts(k - 1)
        c = 0
        while c < min(len(a), len(b)) and a[c] == b[c]:
            c += 1
        up = [".."] * (len(a) - c)
        rest = b[c:] + [self.names[k - 1]]
        if not up and dot:
            return _win_join(["."] + rest)
        return _win_join(up + rest)

    def locator_entries(self, k, linkage="lower", linkage2="zero", relative="auto",
                        volume=True, absolute="win32", order="hyperv", extra=()):
        """Locator entries of file k (its parent is file k-1).
        linkage   'lower' ('{...}' lower case, as libvhdi needs), 'upper', 'bare' (no
                  braces), a UUID, or literal text
        linkage2  'zero' (zero GUID, as Hyper-V writes), None (absent), 'random' (a real
                  GUID matching nothing), 'parent' (the parent's DataWriteGuid), a UUID or
                  literal text
        relative  'auto' (.\\name or ..\\dir\\name), 'plain' (no '.\\'), None, literal text
        volume    True (\\\\?\\Volume{guid}\\path), None/False, literal text
        absolute  'win32' (C:\\path, as Hyper-V writes), 'prefixed' (\\\\?\\C:\\path), 'unc'
                  (\\\\?\\UNC\\server\\share\\path), 'unc_plain' (\\\\server\\share\\path),
                  None, literal text
        order     'hyperv' (Hyper-V's key order), 'spec', or a list of keys
        extra     further (key, value) pairs appended"""
        par = self.images[k - 1]
        dwg = par.data_write_guid

        def guid_text(style):
            if style is None:
                return None
            if isinstance(style, uuid.UUID):
                return "{%s}" % style
            if style == "lower":
                return "{%s}" % dwg
            if style == "upper":
                return ("{%s}" % dwg).upper()
            if style == "bare":
                return str(dwg)
            if style == "zero":
                return ZERO_GUID_TEXT
            if style == "random":
                return "{%s}" % par._uuid()
            if style == "parent":
                return "{%s}" % dwg
            return style
        vr = self.volume_relative(k - 1)
        vals = {"parent_linkage": guid_text(linkage), "parent_linkage2": guid_text(linkage2)}
        if relative == "auto":
            vals["relative_path"] = self.relative(k)
        elif relative == "plain":
            vals["relative_path"] = self.relative(k, dot=False)
        else:
            vals["relative_path"] = relative
        if volume is True:
            vals["volume_path"] = "\\\\?\\Volume{%s}\\%s" % (self.volume_guid, vr)
        else:
            vals["volume_path"] = volume or None
        absmap = {"win32": "%s:\\%s" % (self.drive, vr),
                  "prefixed": "\\\\?\\%s:\\%s" % (self.drive, vr),
                  "unc": "\\\\?\\UNC\\server\\share\\%s" % vr,
                  "unc_plain": "\\\\server\\share\\%s" % vr}
        vals["absolute_win32_path"] = absmap.get(absolute, absolute) if absolute else None
        keys = {"hyperv": HYPERV_KEY_ORDER, "spec": SPEC_KEY_ORDER}.get(order, order) \
            if isinstance(order, str) else order
        ents = [(key, vals[key]) for key in keys if vals.get(key) is not None]
        return ents + list(extra)

    def relink(self, k, **style):
        """(Re)write file k's locator; style overrides this file's locator options."""
        self.styles[k].update(style)
        par, img = self.images[k - 1], self.images[k]
        img.set_parent(None, entries=self.locator_entries(k, **self.styles[k]))
        img.parent = par            # (sizes are not checked: broken chains are allowed)

    def build(self, directory):
        """Write every file under `directory` (the volume root).  -> paths, base first."""
        self.volume_root = directory
        self.paths, self.layouts = [], []
        for k, img in enumerate(self.images):
            d = os.path.join(directory, *self._parts(k))
            os.makedirs(d, exist_ok=True)
            p = os.path.join(d, self.names[k])
            self.layouts.append(img.build(p))
            self.paths.append(p)
        return list(self.paths)

    def expected(self, replay=True):
        """Content of the top file read through the whole chain."""
        return self.top.expected(replay)

    def open(self, replay=True, max_depth=None):
        """open_chain() on the built top file, with this chain's volume root."""
        return open_chain(self.paths[-1], replay=replay, max_depth=max_depth,
                          volume_root=self.volume_root)


# ---------------------------------------------------------------------------------------------
# Corruption catalogue


OK, REJECT, EITHER, NO_SILENT = "ok", "reject", "either", "reject-or-eio"


class Corruption:
    """name, description, outcome, content, requires.

    outcome:
      'ok'            a correct reader opens the image and every read returns `content`
      'reject'        a correct reader refuses to open the image
      'either'        refusing is acceptable; if it opens, reads must return `content`
      'reject-or-eio' refuse at open, or fail reads of `affected` (virtual range) with an I/O
                      error; other reads return `content`; never return wrong data silently
    content: 'expected' (Image.expected() of the base), 'without_replay'
             (Image.expected_without_replay()) or 'expected_zeroed_affected' (expected() with
             the `affected` virtual range reading as zeros).
    affected: (virtual_offset, length) set by apply_corruption() where relevant.
    requires: layout features ('clean' = no log entries, 'dirty' = has a dirty log, 'sb' =
              BAT has sector-bitmap entries)."""

    def __init__(self, name, outcome, description, fn, requires=(), content="expected"):
        self.name, self.outcome, self.description = name, outcome, description
        self.fn, self.requires, self.content = fn, tuple(requires), content
        self.affected = None

    def __repr__(self):
        return "<Corruption %s: %s>" % (self.name, self.outcome)


CORRUPTIONS = {}


def _c(name, outcome, description, requires=(), content="expected"):
    def deco(fn):
        CORRUPTIONS[name] = Corruption(name, outcome, description, fn, requires, content)
        return fn
    return deco


class _Editor:
    def __init__(self, path, lay):
        self.path, self.L = path, lay
        self.f = open(path, "r+b")

    def close(self):
        self.f.close()

    def size(self):
        self.f.seek(0, 2)
        return self.f.tell()

    def read(self, off, n):
        self.f.seek(off)
        return self.f.read(n).ljust(n, b"\0")

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(bytes(data))

    def get(self, fmt, off):
        return struct.unpack(fmt, self.read(off, struct.calcsize(fmt)))[0]

    def put(self, fmt, off, v):
        self.write(off, struct.pack(fmt, v))

    def truncate(self, n):
        self.f.truncate(n)

    def extend_mib(self, n=1):
        """Append n MiB (1 MiB aligned) and return its offset."""
        off = _align_up(self.size(), MiB)
        self.f.truncate(off + n * MiB)
        return off

    # structures
    cur = property(lambda s: s.L.current_header)
    other = property(lambda s: 3 - s.L.current_header)

    def hoff(self, slot):
        return HEADER_SLOTS[slot - 1]

    def fix_header(self, slot):
        o = self.hoff(slot)
        self.write(o, _with_crc(self.read(o, 4096)))

    def hput(self, slot, fmt, field_off, v, fix=True):
        self.put(fmt, self.hoff(slot) + field_off, v)
        if fix:
            self.fix_header(slot)

    def rtoff(self, copy):
        return REGION_TABLE_SLOTS[copy - 1]

    def fix_rt(self, copy):
        o = self.rtoff(copy)
        self.write(o, _with_crc(self.read(o, 64 * KiB)))

    def rt_entries(self, copy=1):
        o = self.rtoff(copy)
        n = self.get("<I", o + 8)
        res = []
        for k in range(min(n, 2047)):
            p = o + 16 + 32 * k
            g = self.read(p, 16)
            off, ln, req = struct.unpack("<QII", self.read(p + 16, 16))
            res.append([g, off, ln, req])
        return res

    def rt_set(self, entries, copies=(1, 2), count=None):
        for c in copies:
            o = self.rtoff(c)
            b = bytearray(self.read(o, 64 * KiB))
            b[16:] = bytes(len(b) - 16)
            struct.pack_into("<I", b, 8, len(entries) if count is None else count)
            for k, (g, off, ln, req) in enumerate(entries[:2047]):
                p = 16 + 32 * k
                b[p:p + 16] = _guid_bytes(g) if not isinstance(g, (bytes, bytearray)) else g
                struct.pack_into("<QII", b, p + 16, off, ln, req)
            self.write(o, _with_crc(b))

    def rt_modify(self, guid, **kw):
        ents = self.rt_entries()
        for e in ents:
            if e[0] == guid.bytes_le:
                if "offset" in kw:
                    e[1] = kw["offset"]
                if "length" in kw:
                    e[2] = kw["length"]
                if "required" in kw:
                    e[3] = kw["required"]
        self.rt_set(ents)

    def md_entry(self, name):
        return self.L.metadata_items[name]["entry_offset"]

    def md_item(self, name):
        return self.L.metadata_items[name]["file_offset"]

    def md_add(self, guid, offset, length, flags):
        """Append a metadata table entry (data at region-relative offset)."""
        mo = self.L.metadata_offset
        n = self.get("<H", mo + 10)
        p = mo + 32 + 32 * n
        self.write(p, guid.bytes_le + struct.pack("<IIII", offset, length, flags, 0))
        self.put("<H", mo + 10, n + 1)

    def md_free(self, n):
        """Region-relative offset of n free bytes after all items."""
        ends = [i["offset"] + i["length"] for i in self.L.metadata_items.values()]
        return _align_up(max(ends + [64 * KiB]), 8)

    def blocks(self, state=FULLY_PRESENT):
        return sorted((i, b) for i, b in self.L.blocks.items()
                      if b["state"] == state and b["file_offset"])

    def bat_set(self, block, value):
        self.put("<Q", self.L.payload_entry_offset(block), value)

    def log_entry(self, k=0):
        ents = self.L.get("log_entries") or []
        if k >= len(ents):
            raise NotApplicable("needs a dirty log")
        return ents[k]

    def log_rw(self, k=0):
        """(read_entry_bytes, write_back) for log entry k (handles wrap)."""
        e = self.log_entry(k)
        L, lo = self.L.log_length, self.L.log_offset

        def rd():
            out = bytearray()
            for s in range(0, e["length"], SECTOR):
                out += self.read(lo + (e["position"] + s) % L, SECTOR)
            return out

        def wr(buf, fix_crc=True):
            if fix_crc:
                buf = _with_crc(buf)
            for s in range(0, e["length"], SECTOR):
                self.write(lo + (e["position"] + s) % L, buf[s:s + SECTOR])
        return rd, wr

    def log_patch(self, k, fn, fix_crc=True):
        rd, wr = self.log_rw(k)
        b = rd()
        fn(b)
        wr(b, fix_crc)


def apply_corruption(path, layout, name):
    """Apply corruption `name` to the built file at `path` (described by `layout`) in place.
    Returns the Corruption (with .affected set where relevant).  Raises NotApplicable."""
    c = CORRUPTIONS[name]
    feats = set(layout.get("features", ()))
    if layout.get("sb_blocks", 0) and layout["payload_blocks"] > layout["chunk_ratio"]:
        feats.add("sb")
    for r in c.requires:
        if r not in feats:
            raise NotApplicable("%s needs a layout with %r" % (name, r))
    if layout.get("current_header") is None:
        raise NotApplicable("base image has no current header")
    ed = _Editor(path, layout)
    try:
        res = c.fn(ed)
    finally:
        ed.close()
    out = Corruption(c.name, c.outcome, c.description, c.fn, c.requires, c.content)
    if isinstance(res, tuple):
        out.affected = res
    return out


def corruption_base(dirty=False, seed=1234):
    """The image the catalogue is designed for: dynamic, 2 MiB blocks, 512/4096 sectors,
    virtual size 9 MiB + 1536 (5 blocks, last one partial); block 0 and 2 FULLY_PRESENT with
    data, block 1 ZERO, block 3 UNMAPPED with a stale pointer at a junk block, block 4 (partial
    last block, last object in the file) FULLY_PRESENT.  Log @1 MiB, metadata @2 MiB,
    BAT @3 MiB, blocks from 4 MiB.  Header 1 sequence 1, header 2 sequence 2 (current).
    dirty=True adds a one-entry log that makes block 3 FULLY_PRESENT at a new location."""
    r = random.Random(seed)
    img = Image(9 * MiB + 1536, block_size=2 * MiB, seed=seed)
    img.write(0, bytes(r.getrandbits(8) for _ in range(5000)))
    img.write(2 * MiB - 100, b"\x11" * 200)
    img.write(4 * MiB + 12345, bytes(r.getrandbits(8) for _ in range(4096)))
    img.set_block_state(1, ZERO)
    img.set_block_state(3, UNMAPPED, file_offset_mb="auto")
    img.write(8 * MiB, b"\x42" * 4096)
    img.write(9 * MiB + 1024, b"\x43" * 512)
    if dirty:
        lg = img.log()
        lg.set_block(3, data=b"\x77" * 8192, data_offset=4096, seq=0x1_0000_0007)
    return img


# --- file identifier -------------------------------------------------------------------------
@_c("ident_signature", REJECT, "file type identifier 'vhdxfile' -> 'vhdxfilf'")
def _(e):
    e.write(7, b"f")


@_c("ident_signature_case", REJECT, "file type identifier signature upper case 'VHDXFILE'")
def _(e):
    e.write(0, b"VHDXFILE")


@_c("ident_zeroed", REJECT, "first 64 KiB (file type identifier) zeroed")
def _(e):
    e.write(0, bytes(64 * KiB))


@_c("ident_creator_garbage", OK, "Creator field: 512 bytes of non-UTF-16, no NUL (diagnostic "
    "only, must not matter)")
def _(e):
    e.write(8, b"\xff\xd8" * 256)


@_c("ident_reserved_garbage", OK, "reserved bytes 520..64K of the identifier filled with junk")
def _(e):
    e.write(520, _junk(64 * KiB - 520))


# --- headers ---------------------------------------------------------------------------------
@_c("hdr_current_signature", OK, "current header signature broken -> fall back to the other "
    "(older, otherwise identical) header")
def _(e):
    e.write(e.hoff(e.cur), b"HEAD")


@_c("hdr_current_checksum", OK, "current header CRC wrong (torn update) -> fall back to the "
    "other header (older; identical here apart from the sequence number)")
def _(e):
    e.write(e.hoff(e.cur) + 4, struct.pack("<I", e.get("<I", e.hoff(e.cur) + 4) ^ 0x1000))


@_c("hdr_current_torn", OK, "second half of the current 4 KiB header replaced by junk (CRC no "
    "longer matches; the reserved area is covered by the CRC) -> fall back")
def _(e):
    o = e.hoff(e.cur)
    e.write(o + 2048, _junk(2048, 0x7041))


@_c("hdr_current_zeroed", OK, "current header slot zeroed -> use the other header")
def _(e):
    e.write(e.hoff(e.cur), bytes(64 * KiB))


@_c("hdr_current_reserved_nonzero", OK, "current header reserved bytes 80..4095 non-zero, CRC "
    "recomputed (ignored on read)")
def _(e):
    e.write(e.hoff(e.cur) + 80, _junk(4016))
    e.fix_header(e.cur)


@_c("hdr_other_signature", OK, "non-current header signature broken (current one is valid)")
def _(e):
    e.write(e.hoff(e.other), b"hexd")


@_c("hdr_other_checksum", OK, "non-current header CRC wrong (current one is valid)")
def _(e):
    o = e.hoff(e.other) + 100
    e.write(o, b"\x01")


@_c("hdr_other_zeroed", OK, "non-current header slot zeroed (only one valid header needed)")
def _(e):
    e.write(e.hoff(e.other), bytes(64 * KiB))


@_c("hdr_both_checksum", REJECT, "both headers have bad CRCs -> no valid header")
def _(e):
    for s in (1, 2):
        e.write(e.hoff(s) + 200, b"\x07")


@_c("hdr_both_signature", REJECT, "both header signatures broken")
def _(e):
    for s in (1, 2):
        e.write(e.hoff(s), b"daeh")


@_c("hdr_both_zeroed", REJECT, "both header slots zeroed")
def _(e):
    for s in (1, 2):
        e.write(e.hoff(s), bytes(64 * KiB))


@_c("hdr_current_version", REJECT, "current header Version = 2 (CRC fixed); the spec says do "
    "not process the file (QEMU instead treats the header as invalid and falls back)")
def _(e):
    e.hput(e.cur, "<H", 66, 2)


@_c("hdr_current_version_zero", REJECT, "current header Version = 0 (CRC fixed)")
def _(e):
    e.hput(e.cur, "<H", 66, 0)


@_c("hdr_other_version", OK, "non-current (older) header Version = 2, CRC fixed: irrelevant")
def _(e):
    e.hput(e.other, "<H", 66, 2)


@_c("hdr_current_logversion_dirty", REJECT, "LogVersion = 1 in the current header while "
    "LogGuid != 0 (CRC fixed)", requires=("dirty",))
def _(e):
    e.hput(e.cur, "<H", 64, 1)


@_c("hdr_current_logversion_clean", OK, "LogVersion = 1 with LogGuid = 0 (CRC fixed): only "
    "fatal when the log is in use (QEMU rejects anyway, trap T15)", requires=("clean",))
def _(e):
    e.hput(e.cur, "<H", 64, 1)


@_c("hdr_current_logguid_no_log", REJECT, "current header gets a random non-zero LogGuid but "
    "the log holds no entry with it -> no valid sequence", requires=("clean",))
def _(e):
    e.write(e.hoff(e.cur) + 48, uuid.UUID(int=0x1234567890ABCDEF1234567890ABCDEF).bytes_le)
    e.fix_header(e.cur)


@_c("hdr_current_log_offset_unaligned", REJECT, "current header LogOffset + 4 KiB (not a "
    "1 MiB multiple), CRC fixed")
def _(e):
    e.hput(e.cur, "<Q", 72, e.L.log_offset + 4096)


@_c("hdr_current_log_length_unaligned", REJECT, "current header LogLength = 1 MiB + 4 KiB, "
    "CRC fixed")
def _(e):
    e.hput(e.cur, "<I", 68, e.L.log_length + 4096)


@_c("hdr_current_log_in_header_section", REJECT, "current header LogOffset = 0 (log overlaps "
    "the header section), CRC fixed")
def _(e):
    e.hput(e.cur, "<Q", 72, 0)


@_c("hdr_current_log_overlaps_bat", REJECT, "current header LogOffset = BAT region offset, "
    "CRC fixed")
def _(e):
    e.hput(e.cur, "<Q", 72, e.L.bat_offset)


@_c("hdr_current_log_overlaps_metadata", REJECT, "current header LogOffset = metadata region "
    "offset, CRC fixed")
def _(e):
    e.hput(e.cur, "<Q", 72, e.L.metadata_offset)


@_c("hdr_current_log_length_huge", REJECT, "current header LogLength = 0xFFF00000 (overlaps "
    "every region), CRC fixed")
def _(e):
    e.hput(e.cur, "<I", 68, 0xFFF00000)


@_c("hdr_current_log_offset_overflow", REJECT, "current header LogOffset = 2^64 - 1 MiB, so "
    "LogOffset + LogLength overflows u64, CRC fixed")
def _(e):
    e.hput(e.cur, "<Q", 72, (1 << 64) - MiB)


@_c("hdr_other_log_offset_unaligned", OK, "non-current header LogOffset unaligned, CRC fixed: "
    "irrelevant")
def _(e):
    e.hput(e.other, "<Q", 72, 12345)


@_c("hdr_seq_equal_identical", OK, "both headers made byte-identical with equal sequence "
    "numbers (Disk2vhd style); accept, use either")
def _(e):
    e.write(e.hoff(e.other), e.read(e.hoff(e.cur), 4096))


@_c("hdr_seq_equal_different", REJECT, "both headers valid with equal sequence numbers but "
    "different FileWriteGuid -> no current header")
def _(e):
    e.write(e.hoff(e.other), e.read(e.hoff(e.cur), 4096))
    e.write(e.hoff(e.other) + 16, b"\xEE" * 16)
    e.fix_header(e.other)


@_c("hdr_seq_max", OK, "current header SequenceNumber = 2^64-1 (CRC fixed)")
def _(e):
    e.hput(e.cur, "<Q", 8, (1 << 64) - 1)


@_c("hdr_swap_current", OK, "the older header gets the higher sequence number (still "
    "identical otherwise): the choice of header must follow the sequence number")
def _(e):
    e.hput(e.other, "<Q", 8, e.get("<Q", e.hoff(e.cur) + 8) + 5)


# --- region tables ---------------------------------------------------------------------------
@_c("rt1_signature", OK, "region table copy 1 signature broken -> use copy 2")
def _(e):
    e.write(e.rtoff(1), b"REGI")


@_c("rt1_checksum", OK, "region table copy 1 CRC wrong (byte in the reserved tail flipped) -> "
    "use copy 2")
def _(e):
    e.write(e.rtoff(1) + 65535, b"\x01")


@_c("rt1_zeroed", OK, "region table copy 1 zeroed -> use copy 2")
def _(e):
    e.write(e.rtoff(1), bytes(64 * KiB))


@_c("rt2_signature", OK, "region table copy 2 signature broken (copy 1 good)")
def _(e):
    e.write(e.rtoff(2), b"xxxx")


@_c("rt2_checksum", OK, "region table copy 2 CRC wrong (copy 1 good)")
def _(e):
    e.write(e.rtoff(2) + 20, b"\xAA")


@_c("rt2_valid_but_different", OK, "region table copy 2 valid (CRC fixed) but its BAT entry "
    "points at the (junk-filled) stale block: readers must use copy 1 when it is valid")
def _(e):
    ents = e.rt_entries(2)
    junk = [b for i, b in e.L.blocks.items() if b["state"] not in (6, 7) and b["fom"]]
    if not junk:
        raise NotApplicable("needs a stale block")
    for x in ents:
        if x[0] == GUID_BAT_REGION.bytes_le:
            x[1] = junk[0]["file_offset"]
    e.rt_set(ents, copies=(2,))


@_c("rt_both_checksum", REJECT, "both region table copies have bad CRCs")
def _(e):
    for c in (1, 2):
        e.write(e.rtoff(c) + 40000, b"\x5A")


@_c("rt_both_zeroed", REJECT, "both region table copies zeroed")
def _(e):
    for c in (1, 2):
        e.write(e.rtoff(c), bytes(64 * KiB))


@_c("rt_entry_count_2048", REJECT, "EntryCount = 2048 (> 2047) in both copies, CRC fixed")
def _(e):
    e.rt_set(e.rt_entries(), count=2048)


@_c("rt_entry_count_huge", REJECT, "EntryCount = 0xFFFFFFFF in both copies, CRC fixed")
def _(e):
    e.rt_set(e.rt_entries(), count=0xFFFFFFFF)


@_c("rt_bat_offset_unaligned", REJECT, "BAT region FileOffset + 4 KiB, both copies, CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, offset=e.L.bat_offset + 4096)


@_c("rt_bat_length_unaligned", REJECT, "BAT region Length = 1 MiB + 8, both copies, CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, length=e.L.bat_length + 8)


@_c("rt_metadata_offset_unaligned", REJECT, "metadata region FileOffset + 64 KiB, CRC fixed")
def _(e):
    e.rt_modify(GUID_METADATA_REGION, offset=e.L.metadata_offset + 64 * KiB)


@_c("rt_metadata_length_unaligned", REJECT, "metadata region Length = 1 MiB - 4 KiB, CRC fixed")
def _(e):
    e.rt_modify(GUID_METADATA_REGION, length=e.L.metadata_length - 4096)


@_c("rt_bat_in_header_section", REJECT, "BAT region FileOffset = 0 (inside the header "
    "section), CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, offset=0)


@_c("rt_bat_overlaps_metadata", REJECT, "BAT region FileOffset = metadata region offset, CRC "
    "fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, offset=e.L.metadata_offset)


@_c("rt_bat_overlaps_log", REJECT, "BAT region FileOffset = LogOffset, CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, offset=e.L.log_offset)


@_c("rt_metadata_overlaps_log", REJECT, "metadata region moved onto the log (the table is "
    "copied there so only the overlap is wrong), CRC fixed", requires=("clean",))
def _(e):
    e.write(e.L.log_offset, e.read(e.L.metadata_offset, e.L.metadata_length))
    e.rt_modify(GUID_METADATA_REGION, offset=e.L.log_offset)


@_c("rt_bat_length_overlaps_next", REJECT, "BAT region Length grown so that it runs into "
    "the next object (a payload block here), CRC fixed")
def _(e):
    nxt = sorted(r["offset"] for r in e.L.regions if r["offset"] > e.L.bat_offset) + \
        [x["file_offset"] for x in e.L.blocks.values() if x["file_offset"] and
         x["file_offset"] > e.L.bat_offset]
    e.rt_modify(GUID_BAT_REGION, length=min(nxt) - e.L.bat_offset + MiB)


@_c("rt_region_overlaps_payload", REJECT, "extra optional region placed on top of a "
    "FULLY_PRESENT payload block, CRC fixed")
def _(e):
    i, b = e.blocks()[0]
    e.rt_set(e.rt_entries() + [[uuid.UUID(int=77).bytes_le, b["file_offset"], MiB, 0]])


@_c("rt_missing_bat", REJECT, "BAT region entry removed from both copies, CRC fixed")
def _(e):
    e.rt_set([x for x in e.rt_entries() if x[0] != GUID_BAT_REGION.bytes_le])


@_c("rt_missing_metadata", REJECT, "metadata region entry removed from both copies, CRC fixed")
def _(e):
    e.rt_set([x for x in e.rt_entries() if x[0] != GUID_METADATA_REGION.bytes_le])


@_c("rt_duplicate_bat", REJECT, "BAT region entry listed twice (same values), CRC fixed")
def _(e):
    ents = e.rt_entries()
    e.rt_set(ents + [x for x in ents if x[0] == GUID_BAT_REGION.bytes_le])


@_c("rt_unknown_required", REJECT, "extra region with an unknown GUID and Required = 1 "
    "(placed in 1 MiB appended at EOF), CRC fixed")
def _(e):
    off = e.extend_mib()
    e.rt_set(e.rt_entries() + [[uuid.UUID(int=0xABC).bytes_le, off, MiB, 1]])


@_c("rt_unknown_optional", OK, "extra region with an unknown GUID and Required = 0 (1 MiB "
    "appended at EOF, junk inside), CRC fixed")
def _(e):
    off = e.extend_mib()
    e.write(off, _junk(4096))
    e.rt_set(e.rt_entries() + [[uuid.UUID(int=0xABD).bytes_le, off, MiB, 0]])


@_c("rt_entries_swapped", OK, "region entries in the opposite order, CRC fixed")
def _(e):
    e.rt_set(e.rt_entries()[::-1])


@_c("rt_offset_overflow", REJECT, "BAT region FileOffset = 2^64 - 1 MiB, Length 2 MiB "
    "(offset + length overflows u64), CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, offset=(1 << 64) - MiB, length=2 * MiB)


@_c("rt_bat_past_eof", REJECT, "BAT region moved beyond the end of the file, CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, offset=_align_up(e.size(), MiB) + 16 * MiB)


@_c("rt_reserved_nonzero", OK, "region table header Reserved = 0xDEADBEEF, CRC fixed (ignored)")
def _(e):
    for c in (1, 2):
        e.put("<I", e.rtoff(c) + 12, 0xDEADBEEF)
        e.fix_rt(c)


@_c("rt_bat_not_required", EITHER, "BAT region entry with Required = 0 (spec says known "
    "regions are marked required; the reader knows the region anyway), CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, required=0)


# --- metadata ---------------------------------------------------------------------------------
@_c("md_signature", REJECT, "metadata table signature 'metadata' -> 'metadatx'")
def _(e):
    e.write(e.L.metadata_offset + 7, b"x")


@_c("md_entry_count_2048", REJECT, "metadata EntryCount = 2048 (> 2047)")
def _(e):
    e.put("<H", e.L.metadata_offset + 10, 2048)


@_c("md_entry_count_huge", REJECT, "metadata EntryCount = 0xFFFF")
def _(e):
    e.put("<H", e.L.metadata_offset + 10, 0xFFFF)


@_c("md_entry_count_short", REJECT, "metadata EntryCount = 2, hiding required items")
def _(e):
    e.put("<H", e.L.metadata_offset + 10, 2)


@_c("md_item_offset_below_64k", REJECT, "File Parameters item Offset = 32 (inside the table)")
def _(e):
    e.put("<I", e.md_entry("file_parameters") + 16, 32)


@_c("md_item_offset_zero", REJECT, "Virtual Disk Size item Offset = 0 with Length 8")
def _(e):
    e.put("<I", e.md_entry("virtual_disk_size") + 16, 0)


@_c("md_item_past_region_end", REJECT, "Virtual Disk Size item Offset = region length - 4 "
    "(8-byte item straddles the region end)")
def _(e):
    e.put("<I", e.md_entry("virtual_disk_size") + 16, e.L.metadata_length - 4)


@_c("md_item_offset_overflow", REJECT, "Logical Sector Size item Offset = 0xFFFFFFFE (offset + "
    "length overflows u32)")
def _(e):
    e.put("<I", e.md_entry("logical_sector_size") + 16, 0xFFFFFFFE)


@_c("md_item_length_over_1mib", REJECT, "Virtual Disk ID item Length = 1 MiB + 16")
def _(e):
    e.put("<I", e.md_entry("virtual_disk_id") + 20, MiB + 16)


@_c("md_items_overlap", REJECT, "Virtual Disk Size item Offset = File Parameters offset + 4 "
    "(items overlap)")
def _(e):
    fp = e.L.metadata_items["file_parameters"]["offset"]
    e.put("<I", e.md_entry("virtual_disk_size") + 16, fp + 4)


@_c("md_item_length_short", REJECT, "Virtual Disk Size item Length = 4 (needs 8)")
def _(e):
    e.put("<I", e.md_entry("virtual_disk_size") + 20, 4)


@_c("md_duplicate_item", REJECT, "second Virtual Disk Size entry (same GUID, IsUser 0) with "
    "its own data")
def _(e):
    off = e.md_free(8)
    e.write(e.L.metadata_offset + off, e.read(e.md_item("virtual_disk_size"), 8))
    e.md_add(ITEM_VIRTUAL_DISK_SIZE, off, 8, 0x06)


@_c("md_unknown_required", REJECT, "unknown system item with IsRequired = 1")
def _(e):
    off = e.md_free(16)
    e.write(e.L.metadata_offset + off, b"\x01" * 16)
    e.md_add(uuid.UUID(int=0xFEED), off, 16, MD_IS_REQUIRED)


@_c("md_unknown_user_required", REJECT, "user item (IsUser) with IsRequired = 1 (reader "
    "cannot understand it)")
def _(e):
    off = e.md_free(16)
    e.write(e.L.metadata_offset + off, b"\x02" * 16)
    e.md_add(uuid.UUID(int=0xFEEE), off, 16, MD_IS_REQUIRED | MD_IS_USER)


@_c("md_unknown_optional", OK, "unknown system item, not required (must be ignored)")
def _(e):
    off = e.md_free(24)
    e.write(e.L.metadata_offset + off, b"\x03" * 24)
    e.md_add(uuid.UUID(int=0xFEEF), off, 24, 0)


@_c("md_user_item", OK, "user item (IsUser, not required) with data")
def _(e):
    off = e.md_free(40)
    e.write(e.L.metadata_offset + off, "hello user metadata!".encode("utf-16-le"))
    e.md_add(uuid.UUID(int=0xF00D), off, 40, MD_IS_USER)


def _md_kill(e, name):
    e.write(e.md_entry(name), uuid.UUID(int=0x5EED).bytes_le)   # unknown, flags left


@_c("md_missing_file_parameters", REJECT, "File Parameters item GUID replaced by an unknown "
    "GUID (flags cleared)")
def _(e):
    _md_kill(e, "file_parameters")
    e.put("<I", e.md_entry("file_parameters") + 24, 0)


@_c("md_missing_virtual_disk_size", REJECT, "Virtual Disk Size item GUID replaced (flags "
    "cleared)")
def _(e):
    _md_kill(e, "virtual_disk_size")
    e.put("<I", e.md_entry("virtual_disk_size") + 24, 0)


@_c("md_missing_logical_sector_size", REJECT, "Logical Sector Size item GUID replaced (flags "
    "cleared)")
def _(e):
    _md_kill(e, "logical_sector_size")
    e.put("<I", e.md_entry("logical_sector_size") + 24, 0)


@_c("md_missing_physical_sector_size", EITHER, "Physical Sector Size item GUID replaced "
    "(QEMU requires the item; the spec lists it as a required system item)")
def _(e):
    _md_kill(e, "physical_sector_size")
    e.put("<I", e.md_entry("physical_sector_size") + 24, 0)


@_c("md_missing_virtual_disk_id", EITHER, "Virtual Disk ID item GUID replaced (QEMU requires it)")
def _(e):
    _md_kill(e, "virtual_disk_id")
    e.put("<I", e.md_entry("virtual_disk_id") + 24, 0)


@_c("md_block_size_not_pow2", REJECT, "BlockSize = 3 MiB")
def _(e):
    e.put("<I", e.md_item("file_parameters"), 3 * MiB)


@_c("md_block_size_512mib", REJECT, "BlockSize = 512 MiB (> 256 MiB)")
def _(e):
    e.put("<I", e.md_item("file_parameters"), 512 * MiB)


@_c("md_block_size_512kib", REJECT, "BlockSize = 512 KiB (< 1 MiB)")
def _(e):
    e.put("<I", e.md_item("file_parameters"), 512 * KiB)


@_c("md_block_size_zero", REJECT, "BlockSize = 0")
def _(e):
    e.put("<I", e.md_item("file_parameters"), 0)


@_c("md_logical_sector_1024", REJECT, "LogicalSectorSize = 1024")
def _(e):
    e.put("<I", e.md_item("logical_sector_size"), 1024)


@_c("md_logical_sector_zero", REJECT, "LogicalSectorSize = 0")
def _(e):
    e.put("<I", e.md_item("logical_sector_size"), 0)


@_c("md_physical_sector_1024", REJECT, "PhysicalSectorSize = 1024")
def _(e):
    e.put("<I", e.md_item("physical_sector_size"), 1024)


@_c("md_virtual_size_unaligned", REJECT, "VirtualDiskSize += 256 (not a multiple of the 512 "
    "logical sector; same block count)")
def _(e):
    p = e.md_item("virtual_disk_size")
    e.put("<Q", p, e.get("<Q", p) + 256)


@_c("md_virtual_size_over_64tib", REJECT, "VirtualDiskSize = 64 TiB + 512 (the BAT is then "
    "also too small)")
def _(e):
    e.put("<Q", e.md_item("virtual_disk_size"), MAX_VIRTUAL_SIZE + 512)


@_c("md_virtual_size_huge", REJECT, "VirtualDiskSize = 2^64 - 512 (block-count arithmetic "
    "overflows)")
def _(e):
    e.put("<Q", e.md_item("virtual_disk_size"), (1 << 64) - 512)


@_c("md_virtual_size_zero", REJECT, "VirtualDiskSize = 0 (no blocks; the BAT-count formula "
    "underflows; refuse)")
def _(e):
    e.put("<Q", e.md_item("virtual_disk_size"), 0)


@_c("md_file_params_reserved_bits", EITHER, "File Parameters flags reserved bits 2..31 set "
    "(0xFFFFFFFC; MUST be 0)")
def _(e):
    p = e.md_item("file_parameters") + 4
    e.put("<I", p, e.get("<I", p) | 0xFFFFFFFC)


@_c("md_entry_flags_reserved", EITHER, "metadata entry Flags reserved bits 3..31 set on "
    "Virtual Disk Size (0xFFFFFFF8 | 6)")
def _(e):
    e.put("<I", e.md_entry("virtual_disk_size") + 24, 0xFFFFFFFE)


@_c("md_has_parent_without_locator", REJECT, "HasParent = 1 but no Parent Locator item",
    requires=("clean",))
def _(e):
    if "parent_locator" in e.L.metadata_items:
        raise NotApplicable("already differencing")
    p = e.md_item("file_parameters") + 4
    e.put("<I", p, (e.get("<I", p) & ~1) | 2)


@_c("md_known_item_not_required", OK, "Physical Sector Size entry without IsRequired "
    "(flags 0x02; seen in early images, be lenient)")
def _(e):
    e.put("<I", e.md_entry("physical_sector_size") + 24, 0x02)


@_c("md_table_reserved_nonzero", OK, "metadata table header Reserved/Reserved2 non-zero "
    "(ignored)")
def _(e):
    e.put("<H", e.L.metadata_offset + 8, 0x1234)
    e.write(e.L.metadata_offset + 12, b"\x99" * 20)


# --- BAT ------------------------------------------------------------------------------------
def _first_present(e):
    bl = e.blocks()
    if not bl:
        raise NotApplicable("needs a FULLY_PRESENT block")
    return bl[0]


def _vrange(e, i):
    bs = e.L.block_size
    return (i * bs, min(bs, e.L.virtual_size - i * bs))


@_c("bat_past_eof", NO_SILENT, "FULLY_PRESENT entry points 64 MiB past EOF", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, FULLY_PRESENT | ((_align_up(e.size(), MiB) + 64 * MiB) // MiB) << 20)
    return _vrange(e, i)


# REJECT, not NO_SILENT: offset + block size wraps past 2^64 here, and a reader that adds
# before comparing accepts the entry and writes over the header section (qemu-img refuses
# it at open: "BAT entry 0 offset overflow").
@_c("bat_offset_huge", REJECT, "FULLY_PRESENT entry with FileOffsetMB = 2^44 - 1 "
    "(offset near 16 EiB)", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, FULLY_PRESENT | ((1 << 44) - 1) << 20)
    return _vrange(e, i)


@_c("bat_in_header_section", REJECT, "FULLY_PRESENT entry with FileOffsetMB = 0", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, FULLY_PRESENT)


@_c("bat_overlaps_bat", REJECT, "FULLY_PRESENT entry points at the BAT region", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, FULLY_PRESENT | (e.L.bat_offset // MiB) << 20)


@_c("bat_overlaps_metadata", REJECT, "FULLY_PRESENT entry points at the metadata region", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, FULLY_PRESENT | (e.L.metadata_offset // MiB) << 20)


@_c("bat_overlaps_log", REJECT, "FULLY_PRESENT entry points at the log", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, FULLY_PRESENT | (e.L.log_offset // MiB) << 20)


@_c("bat_duplicate_offset", REJECT, "two FULLY_PRESENT entries with the same FileOffsetMB", requires=("clean",))
def _(e):
    bl = e.blocks()
    if len(bl) < 2:
        raise NotApplicable("needs two blocks")
    e.bat_set(bl[1][0], FULLY_PRESENT | bl[0][1]["fom"] << 20)


@_c("bat_blocks_overlap", REJECT, "a FULLY_PRESENT block starts 1 MiB into another (2 MiB "
    "blocks overlap partially)", requires=("clean",))
def _(e):
    bl = e.blocks()
    if len(bl) < 2 or e.L.block_size < 2 * MiB:
        raise NotApplicable("needs two blocks >= 2 MiB")
    e.bat_set(bl[1][0], FULLY_PRESENT | (bl[0][1]["fom"] + 1) << 20)


@_c("bat_reserved_bits", REJECT, "FULLY_PRESENT entry with reserved bit 3 set", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, FULLY_PRESENT | 8 | b["fom"] << 20)


@_c("bat_reserved_bits_high", REJECT, "NOT_PRESENT entry with reserved bit 19 set", requires=("clean",))
def _(e):
    free = [i for i in range(e.L.payload_blocks) if i not in e.L.blocks]
    if not free:
        raise NotApplicable("needs a NOT_PRESENT block")
    e.bat_set(free[0], 1 << 19)


@_c("bat_partially_present_dynamic", REJECT, "PARTIALLY_PRESENT (7) entry in a "
    "non-differencing file", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, PARTIALLY_PRESENT | b["fom"] << 20)


@_c("bat_state_4", REJECT, "payload entry with reserved state 4", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, 4 | b["fom"] << 20)


@_c("bat_state_5", EITHER, "payload entry with reserved state 5 (UNMAPPED in the v0.95 draft; "
    "QEMU reads zeros); if accepted the block must read as zeros",
    content="expected_zeroed_affected", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    e.bat_set(i, 5 | b["fom"] << 20)
    return _vrange(e, i)


@_c("bat_sb_present_dynamic", EITHER, "sector-bitmap entry SB_BLOCK_PRESENT in a dynamic file "
    "(seen in the wild; tolerate)", requires=("sb", "clean"))
def _(e):
    off = e.extend_mib()
    e.put("<Q", e.L.bat_entry_offset(sb_bat_index(0, e.L.chunk_ratio)), SB_PRESENT | off)


@_c("bat_in_place_repaired_by_log", OK, "in-place BAT entry of block 0 set to reserved state 4; "
    "the log entry rewrites that whole BAT sector, so a reader that replays before validating "
    "(trap T14) sees a valid BAT", requires=("dirty",))
def _(e):
    i, b = _first_present(e)
    sec = e.L.payload_entry_offset(i) // SECTOR * SECTOR
    if ("data", sec) not in e.log_entry(0)["targets"]:
        raise NotApplicable("log does not rewrite that BAT sector")
    e.bat_set(i, 4 | b["fom"] << 20)


@_c("bat_region_length_zero", REJECT, "BAT region Length = 0 in the region table (too small "
    "for the entries), CRC fixed")
def _(e):
    e.rt_modify(GUID_BAT_REGION, length=0)


@_c("bat_region_too_small_for_size", REJECT, "VirtualDiskSize raised to 512 GiB: the 1 MiB BAT "
    "region can no longer hold the entries")
def _(e):
    need = bat_entry_count(512 * GiB, e.L.block_size, e.L.logical_sector) * 8
    if need <= e.L.bat_length:
        raise NotApplicable("BAT region too large")
    e.put("<Q", e.md_item("virtual_disk_size"), 512 * GiB)


@_c("bat_zero_with_offset", OK, "PAYLOAD_BLOCK_ZERO entry with a non-zero FileOffsetMB "
    "pointing at data (field is reserved; must read zeros)", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    zs = [k for k, x in e.L.blocks.items() if x["state"] == ZERO]
    if not zs:
        raise NotApplicable("needs a ZERO block")
    e.bat_set(zs[0], ZERO | b["fom"] << 20)


@_c("bat_not_present_with_offset", OK, "NOT_PRESENT entry with FileOffsetMB pointing at "
    "another block's data (reserved field; must read zeros)", requires=("clean",))
def _(e):
    i, b = _first_present(e)
    free = [k for k in range(e.L.payload_blocks) if k not in e.L.blocks]
    if not free:
        raise NotApplicable("needs a NOT_PRESENT block")
    e.bat_set(free[0], NOT_PRESENT | b["fom"] << 20)


@_c("bat_unmapped_offset_huge", OK, "UNMAPPED entry with FileOffsetMB far past EOF (field "
    "is only a hint; must read zeros)", requires=("clean",))
def _(e):
    free = [k for k, x in e.L.blocks.items() if x["state"] == UNMAPPED] or \
        [k for k in range(e.L.payload_blocks) if k not in e.L.blocks]
    if not free:
        raise NotApplicable("needs a free block")
    e.bat_set(free[0], UNMAPPED | ((1 << 44) - 1) << 20)


# --- truncation -------------------------------------------------------------------------------
@_c("trunc_zero", REJECT, "file truncated to 0 bytes")
def _(e):
    e.truncate(0)


@_c("trunc_in_ident", REJECT, "truncated at 4 KiB (inside the file type identifier)")
def _(e):
    e.truncate(4096)


@_c("trunc_in_header1", REJECT, "truncated at 64 KiB + 2 KiB (inside header 1)")
def _(e):
    e.truncate(0x10000 + 2048)


@_c("trunc_in_header2", REJECT, "truncated at 128 KiB + 2 KiB (inside header 2; region "
    "tables gone)")
def _(e):
    e.truncate(0x20000 + 2048)


@_c("trunc_in_region_table1", REJECT, "truncated at 192 KiB + 100 (inside region table 1)")
def _(e):
    e.truncate(0x30000 + 100)


@_c("trunc_in_region_table2", REJECT, "truncated at 256 KiB + 100 (inside region table 2; "
    "everything after the header section gone)")
def _(e):
    e.truncate(0x40000 + 100)


@_c("trunc_header_section", REJECT, "truncated at 1 MiB (only the header section left)")
def _(e):
    e.truncate(MiB)


@_c("trunc_in_metadata_table", REJECT, "truncated 16 bytes into the metadata table")
def _(e):
    e.truncate(e.L.metadata_offset + 16)


@_c("trunc_in_metadata_items", REJECT, "truncated inside the metadata items (64 KiB + 10 into "
    "the region)")
def _(e):
    e.truncate(e.L.metadata_offset + 64 * KiB + 10)


@_c("trunc_in_bat", REJECT, "truncated 4 bytes into the BAT region")
def _(e):
    if e.L.bat_offset < max(e.L.metadata_offset, e.L.log_offset):
        raise NotApplicable("BAT must be after metadata")
    e.truncate(e.L.bat_offset + 4)


@_c("trunc_in_payload", NO_SILENT, "truncated in the middle of the last payload block, "
    "inside the virtual disk range", requires=("clean",))
def _(e):
    i, b = max(e.blocks(), key=lambda x: x[1]["file_offset"])
    vs, bs = _vrange(e, i)
    e.truncate(b["file_offset"] + bs // 2)
    return (vs + bs // 2, bs - bs // 2)


@_c("trunc_last_block_beyond_disk", OK, "last payload block cut right after its part inside "
    "the virtual disk (4 KiB rounded; QEMU made such files, tolerate)", requires=("clean",))
def _(e):
    i, b = max(e.blocks(), key=lambda x: x[1]["file_offset"])
    vs, n = _vrange(e, i)
    if n == e.L.block_size:
        raise NotApplicable("last block is not partial")
    e.truncate(b["file_offset"] + _align_up(n, 4096))


# --- log (dirty base) -------------------------------------------------------------------------
@_c("log_entry_crc", REJECT, "a data byte of the only log entry flipped (CRC mismatch) -> no "
    "valid sequence while LogGuid != 0", requires=("dirty",))
def _(e):
    e.log_patch(0, lambda b: b.__setitem__(len(b) - 100, b[len(b) - 100] ^ 1), fix_crc=False)


@_c("log_entry_signature", REJECT, "log entry signature 'loge' -> 'logx' (CRC fixed)",
    requires=("dirty",))
def _(e):
    e.log_patch(0, lambda b: b.__setitem__(slice(3, 4), b"x"))


@_c("log_entry_guid", REJECT, "log entry LogGuid differs from the header's (CRC fixed): stale "
    "entry, no valid sequence", requires=("dirty",))
def _(e):
    e.log_patch(0, lambda b: b.__setitem__(slice(32, 48), b"\x42" * 16))


@_c("log_header_guid_changed", REJECT, "current header LogGuid changed (CRC fixed); entries "
    "no longer match", requires=("dirty",))
def _(e):
    e.write(e.hoff(e.cur) + 48, b"\x24" * 16)
    e.fix_header(e.cur)


@_c("log_header_guid_zero", OK, "current header LogGuid = 0 (CRC fixed): log is empty, must "
    "NOT be replayed", requires=("dirty",), content="without_replay")
def _(e):
    e.write(e.hoff(e.cur) + 48, bytes(16))
    e.fix_header(e.cur)


@_c("log_desc_seq_mismatch", REJECT, "first descriptor's SequenceNumber = entry's + 1 (CRC "
    "fixed)", requires=("dirty",))
def _(e):
    def f(b):
        struct.pack_into("<Q", b, 64 + 24, struct.unpack_from("<Q", b, 16)[0] + 1)
    e.log_patch(0, f)


@_c("log_data_seq_high_mismatch", REJECT, "first data sector SequenceHigh off by one (CRC "
    "fixed)", requires=("dirty",))
def _(e):
    d = e.log_entry(0)["descriptor_sectors"] * SECTOR

    def f(b):
        struct.pack_into("<I", b, d + 4, struct.unpack_from("<I", b, d + 4)[0] ^ 1)
    e.log_patch(0, f)


@_c("log_data_seq_low_mismatch", REJECT, "first data sector SequenceLow off by one (CRC "
    "fixed)", requires=("dirty",))
def _(e):
    d = e.log_entry(0)["descriptor_sectors"] * SECTOR

    def f(b):
        struct.pack_into("<I", b, d + 4092, struct.unpack_from("<I", b, d + 4092)[0] ^ 1)
    e.log_patch(0, f)


@_c("log_data_signature", REJECT, "first data sector signature 'data' -> 'dat4' (CRC fixed)",
    requires=("dirty",))
def _(e):
    d = e.log_entry(0)["descriptor_sectors"] * SECTOR
    e.log_patch(0, lambda b: b.__setitem__(slice(d + 3, d + 4), b"4"))


@_c("log_desc_signature", REJECT, "first descriptor signature 'desc' -> 'dezc' (CRC fixed)",
    requires=("dirty",))
def _(e):
    e.log_patch(0, lambda b: b.__setitem__(slice(64 + 2, 64 + 3), b"z"))


@_c("log_desc_offset_unaligned", REJECT, "first descriptor FileOffset + 512 (not 4 KiB "
    "aligned; CRC fixed)", requires=("dirty",))
def _(e):
    def f(b):
        struct.pack_into("<Q", b, 64 + 16, struct.unpack_from("<Q", b, 64 + 16)[0] + 512)
    e.log_patch(0, f)


@_c("log_entry_length_huge", REJECT, "EntryLength = LogLength + 4 KiB (CRC fixed over the "
    "original extent)", requires=("dirty",))
def _(e):
    e.log_patch(0, lambda b: struct.pack_into("<I", b, 8, e.L.log_length + 4096))


@_c("log_entry_length_unaligned", REJECT, "EntryLength not a multiple of 4 KiB", requires=(
    "dirty",))
def _(e):
    e.log_patch(0, lambda b: struct.pack_into("<I", b, 8, struct.unpack_from("<I", b, 8)[0]
                                              + 100))


@_c("log_tail_not_entry", REJECT, "Tail points at a 4 KiB offset that is not an entry of the "
    "sequence (CRC fixed)", requires=("dirty",))
def _(e):
    en = e.log_entry(0)
    t = (en["position"] + en["length"] + 8 * SECTOR) % e.L.log_length
    e.log_patch(0, lambda b: struct.pack_into("<I", b, 12, t))


@_c("log_seq_zero", REJECT, "entry SequenceNumber = 0 (descriptors/data sectors updated to "
    "match, CRC fixed)", requires=("dirty",))
def _(e):
    en = e.log_entry(0)

    def f(b):
        struct.pack_into("<Q", b, 16, 0)
        for k in range(en["descriptors"]):
            struct.pack_into("<Q", b, 64 + 32 * k + 24, 0)
        for k in range(en["data_sectors"]):
            d = (en["descriptor_sectors"] + k) * SECTOR
            struct.pack_into("<I", b, d + 4, 0)
            struct.pack_into("<I", b, d + 4092, 0)
    e.log_patch(0, f)


@_c("log_descriptor_count_huge", REJECT, "DescriptorCount = 0xFFFFFFFF (CRC fixed)", requires=(
    "dirty",))
def _(e):
    e.log_patch(0, lambda b: struct.pack_into("<I", b, 24, 0xFFFFFFFF))


@_c("log_flushed_past_eof", REJECT, "head entry FlushedFileOffset = file size + 1 MiB (file "
    "looks truncated; CRC fixed)", requires=("dirty",))
def _(e):
    sz = _align_up(e.size(), MiB) + MiB
    e.log_patch(0, lambda b: struct.pack_into("<Q", b, 48, sz))


@_c("log_last_file_offset_larger", OK, "head entry LastFileOffset = file size + 1 MiB (a "
    "writable replay must extend the file; content unchanged; CRC fixed)", requires=("dirty",))
def _(e):
    sz = _align_up(e.size(), MiB) + MiB
    e.log_patch(0, lambda b: struct.pack_into("<Q", b, 56, sz))


@_c("log_entry_reserved_nonzero", EITHER, "entry header Reserved = 1 (MUST be 0; CRC fixed)",
    requires=("dirty",))
def _(e):
    e.log_patch(0, lambda b: struct.pack_into("<I", b, 28, 1))


@_c("log_truncated_in_log", REJECT, "file truncated inside the log region (LogGuid != 0)",
    requires=("dirty",))
def _(e):
    e.truncate(e.L.log_offset + 2048)


# ---------------------------------------------------------------------------------------------
# Bad chains: differencing files and chains a correct reader must refuse (or read right)


class BadChain:
    """One entry of BAD_CHAINS: name, outcome, reason, description.

    outcome: as for Corruption ('ok', 'reject', 'either', 'reject-or-eio').
    reason:  the tag a refusing oracle gives (Reject.reason): 'parent-missing', 'linkage',
             'sector-size', 'virtual-size', 'cycle', 'depth', 'locator', 'parent-invalid',
             'bitmap', 'overlap', 'bat'; None for 'ok' entries.
    Build one with make_bad_chain(name, directory, depth_limit=256) -> ChainCase."""

    def __init__(self, name, outcome, reason, description, fn):
        self.name, self.outcome, self.reason = name, outcome, reason
        self.description, self.fn = description, fn

    def __repr__(self):
        return "<BadChain %s: %s>" % (self.name, self.outcome)


class ChainCase:
    """A built bad-chain case.

    name, outcome, reason, description -- from the catalogue entry
    child        the file to open (read it, `info` it, `check` it)
    files        every file written (none may change when the child is opened, read or
                 refused: parents are read-only, and nothing is written to a refused file)
    parent_tried the parent path a refusal message should name (None when the refusal is
                 about the child itself)
    volume_root  the directory that plays the volume root (outcomes do not depend on it:
                 where volume_path / absolute_win32_path matter the child sits there)
    depth_limit  the depth limit the case was built for (files in the chain)
    affected     (virtual_offset, length) for 'reject-or-eio', else None
    via, linkage for 'ok' and 'either' entries: the locator key that finds the child's
                 parent and the key that verifies it ('parent_linkage'/'parent_linkage2')
    chain        the Chain model (None for hand-made cycles)
    expected(replay=True)   content a reader returns ('ok', 'either', and outside
                            `affected` for 'reject-or-eio'); replay=False: what a reader
                            that ignores logs in every file sees
    open(replay=True)       the oracle's verdict: a view, or raises Reject"""

    def __init__(self, entry, directory, depth_limit):
        self.name, self.outcome, self.reason = entry.name, entry.outcome, entry.reason
        self.description = entry.description
        self.directory = self.volume_root = directory
        self.depth_limit = depth_limit
        self.child = self.parent_tried = self.affected = self.chain = None
        self.via, self.linkage = "relative_path", "parent_linkage"
        self.files = []
        self._expected = None

    def expected(self, replay=True):
        if self._expected is not None:
            return self._expected(replay)
        return self.chain.top.expected(replay)

    def open(self, replay=True):
        return open_chain(self.child, replay=replay, max_depth=self.depth_limit,
                          volume_root=self.volume_root)

    def __repr__(self):
        return "<ChainCase %s: %s %s>" % (self.name, self.outcome, self.child)


BAD_CHAINS = {}


def _bc(name, outcome, reason, description):
    def deco(fn):
        BAD_CHAINS[name] = BadChain(name, outcome, reason, description, fn)
        return fn
    return deco


class _ChainCtx:
    """What a catalogue entry builds with."""

    VS = 8 * MiB

    def __init__(self, case, seed):
        self.case = case
        self.d = case.directory
        self.seed = seed

    def image(self, vs=None, lss=512, block_size=MiB, tag="BASE", seed=0, **kw):
        img = Image(vs or self.VS, block_size=block_size, logical_sector=lss,
                    seed=self.seed + seed, **kw)
        stamp_sectors(img, tag)
        return img

    def standard(self, levels=1, lss=512, names=None, dirs=None, locators=None,
                 states=EVERY_STATE, vs=None, build=True):
        """base (every sector stamped) + `levels` children filled with every block state;
        built into the case directory; case.child = top, parent_tried = its parent."""
        imgs = [self.image(vs=vs, lss=lss)]
        for k in range(levels):
            c = make_child(imgs[-1], seed=self.seed + 10 + k)
            fill_every_state(c, tag="DIFF%d" % (k + 1), states=states)
            imgs.append(c)
        ch = Chain(imgs, names=names, dirs=dirs, locators=locators)
        self.case.chain = ch
        if build:
            self.build(ch)
        return ch

    def build(self, ch):
        ch.build(self.d)
        self.case.files = list(ch.paths)
        self.case.child = ch.paths[-1]
        self.case.parent_tried = ch.paths[-2] if len(ch.paths) > 1 else None
        return ch

    def editor(self, k=-1):
        ch = self.case.chain
        return _Editor(ch.paths[k], ch.layouts[k])

    def sb_entry_offset(self, lay, j=0):
        return lay.bat_entry_offset(sb_bat_index(j, lay.chunk_ratio))


def make_bad_chain(name, directory, depth_limit=DEFAULT_MAX_DEPTH, seed=4321):
    """Build catalogue entry `name` into `directory` (created; should be empty).
    -> ChainCase."""
    entry = BAD_CHAINS[name]
    os.makedirs(directory, exist_ok=True)
    case = ChainCase(entry, directory, depth_limit)
    entry.fn(_ChainCtx(case, seed))
    return case


# --- parents that cannot be found or used ---------------------------------------------------
@_bc("parent_missing", REJECT, "parent-missing", "the parent file is gone (every locator "
     "path names a file that does not exist)")
def _(x):
    ch = x.standard()
    os.unlink(ch.paths[0])
    x.case.files = ch.paths[1:]


@_bc("grandparent_missing", REJECT, "parent-missing", "three files; the base is gone: the "
     "middle file's parent is missing (a message names the middle file and the base path)")
def _(x):
    ch = x.standard(levels=2)
    os.unlink(ch.paths[0])
    x.case.files = ch.paths[1:]
    x.case.parent_tried = ch.paths[0]


@_bc("parent_not_vhdx", REJECT, "parent-invalid", "the parent path holds 8 MiB of raw data, "
     "not a VHDX file")
def _(x):
    ch = x.standard()
    with open(ch.paths[0], "wb") as f:
        f.write(b"RAW DISK" * MiB)


@_bc("parent_corrupt", REJECT, "parent-invalid", "both headers of the parent have bad "
     "checksums")
def _(x):
    x.standard()
    ed = x.editor(0)
    for slot in (1, 2):
        ed.write(HEADER_SLOTS[slot - 1] + 4, b"\xde\xad\xbe\xef")
    ed.close()


@_bc("parent_dirty_log_invalid", REJECT, "parent-invalid", "the parent's header carries a "
     "LogGuid but its log holds no valid entry (the parent cannot be opened)")
def _(x):
    ch = x.standard(build=False)
    ch.images[0].log().entry(writes=[(lambda L: L.bat_offset, bytes(4096))],
                             corrupt_crc=True)
    x.build(ch)


# --- linkage -----------------------------------------------------------------------------
@_bc("linkage_mismatch", REJECT, "linkage", "the parent was changed after the fork: its "
     "DataWriteGuid no longer equals the child's parent_linkage (parent_linkage2 is the "
     "zero GUID)")
def _(x):
    ch = x.standard(build=False)
    x.build(ch)
    ch.images[0].data_write_guid = ch.images[0]._uuid()
    ch.images[0]._dirty()
    ch.images[0].build(ch.paths[0])


@_bc("linkage2_zero_parent_dwg_zero", REJECT, "linkage", "the parent's DataWriteGuid is the "
     "zero GUID, parent_linkage is another GUID and parent_linkage2 is the zero GUID: a zero "
     "parent_linkage2 must never match")
def _(x):
    ch = x.standard(build=False, locators={"linkage": uuid.UUID(int=0x1234)})
    ch.images[0].data_write_guid = uuid.UUID(int=0)
    ch.images[0]._dirty()
    x.build(ch)


@_bc("linkage2_matches", OK, None, "parent_linkage is stale but parent_linkage2 equals the "
     "parent's DataWriteGuid (a merge in progress, spec footnote <12>)")
def _(x):
    x.standard(locators={"linkage": uuid.UUID(int=0x5678), "linkage2": "parent"})
    x.case.linkage = "parent_linkage2"


@_bc("linkage2_random", OK, None, "parent_linkage matches; parent_linkage2 is a non-zero "
     "GUID that matches nothing")
def _(x):
    x.standard(locators={"linkage2": "random"})


@_bc("linkage2_absent", OK, None, "no parent_linkage2 key")
def _(x):
    x.standard(locators={"linkage2": None})


@_bc("linkage_upper_case", OK, None, "parent_linkage in upper case ({ABCD...}); GUID text "
     "compares case-insensitively (libvhdi does not accept this form)")
def _(x):
    x.standard(locators={"linkage": "upper"})


@_bc("linkage_no_braces", EITHER, None, "parent_linkage without braces (the spec shows "
     "braces; the oracle accepts it)")
def _(x):
    x.standard(locators={"linkage": "bare"})


@_bc("linkage_not_guid", REJECT, "locator", "parent_linkage is 'parent.vhdx', not GUID text")
def _(x):
    x.standard(locators={"linkage": "parent.vhdx"})
    x.case.parent_tried = None


# --- locator structure -------------------------------------------------------------------
@_bc("locator_no_linkage", REJECT, "locator", "the locator has paths but no parent_linkage "
     "(it MUST be present)")
def _(x):
    ch = x.standard(build=False)
    ents = [e for e in ch.images[1].locator_entries if e[0] != "parent_linkage"]
    ch.images[1].set_parent(None, entries=ents)
    x.build(ch)
    x.case.parent_tried = None


@_bc("locator_no_paths", REJECT, "locator", "the locator has parent_linkage and "
     "parent_linkage2 but none of relative_path, volume_path, absolute_win32_path")
def _(x):
    x.standard(locators={"relative": None, "volume": None, "absolute": None})
    x.case.parent_tried = None


@_bc("locator_empty", REJECT, "locator", "the locator has KeyValueCount 0")
def _(x):
    ch = x.standard(build=False)
    ch.images[1].set_parent(None, entries=[])
    x.build(ch)
    x.case.parent_tried = None


@_bc("locator_unknown_type", REJECT, "locator", "LocatorType is not the VHDX parent type")
def _(x):
    ch = x.standard(build=False)
    ch.images[1].locator_type = uuid.UUID(int=0xABCDEF)
    ch.images[1]._dirty()
    x.build(ch)
    x.case.parent_tried = None


@_bc("locator_duplicate_key", REJECT, "locator", "relative_path appears twice (keys are "
     "unique)")
def _(x):
    ch = x.standard(build=False)
    ch.relink(1, extra=[("relative_path", ".\\other.vhdx")])
    x.build(ch)
    x.case.parent_tried = None


# --- sizes -----------------------------------------------------------------------------------
@_bc("sector_size_mismatch", REJECT, "sector-size", "4096-byte-sector child over a "
     "512-byte-sector parent (linkage and virtual size match)")
def _(x):
    base = x.image(lss=512)
    child = Image(base.virtual_size, block_size=MiB, logical_sector=4096, seed=x.seed + 1,
                  has_parent=True)
    stamp_sectors(child, "DIFF1", 0, MiB, partial=True)
    x.case.chain = x.build(Chain([base, child]))


@_bc("sector_size_mismatch_512_child", REJECT, "sector-size", "512-byte-sector child over a "
     "4096-byte-sector parent")
def _(x):
    base = x.image(lss=4096)
    child = Image(base.virtual_size, block_size=MiB, logical_sector=512, seed=x.seed + 1,
                  has_parent=True)
    stamp_sectors(child, "DIFF1", 0, MiB, partial=True)
    x.case.chain = x.build(Chain([base, child]))


@_bc("virtual_size_mismatch", REJECT, "virtual-size", "the child's virtual size is 2 MiB "
     "larger than the parent's")
def _(x):
    base = x.image()
    child = Image(base.virtual_size + 2 * MiB, block_size=MiB, seed=x.seed + 1,
                  has_parent=True)
    stamp_sectors(child, "DIFF1", 0, MiB, partial=True)
    x.case.chain = x.build(Chain([base, child]))


# --- cycles and depth ------------------------------------------------------------------------
def _self_locator(dwg, name):
    return [("parent_linkage", "{%s}" % dwg), ("relative_path", ".\\" + name),
            ("parent_linkage2", ZERO_GUID_TEXT)]


@_bc("cycle_self", REJECT, "cycle", "the child's locator names the child itself (its own "
     "DataWriteGuid as parent_linkage)")
def _(x):
    img = Image(x.VS, block_size=MiB, seed=x.seed)
    img.set_parent(None, entries=_self_locator(img.data_write_guid, "self.avhdx"))
    stamp_sectors(img, "SELF", 0, MiB, partial=True)
    p = os.path.join(x.d, "self.avhdx")
    img.build(p)
    x.case.child, x.case.files, x.case.parent_tried = p, [p], p


@_bc("cycle_two", REJECT, "cycle", "a.avhdx -> b.avhdx -> a.avhdx, each linkage right")
def _(x):
    a = Image(x.VS, block_size=MiB, seed=x.seed)
    b = Image(x.VS, block_size=MiB, seed=x.seed + 1)
    a.set_parent(None, entries=_self_locator(b.data_write_guid, "b.avhdx"))
    b.set_parent(None, entries=_self_locator(a.data_write_guid, "a.avhdx"))
    stamp_sectors(a, "A", 0, MiB, partial=True)
    stamp_sectors(b, "B", MiB, MiB, partial=True)
    pa, pb = os.path.join(x.d, "a.avhdx"), os.path.join(x.d, "b.avhdx")
    a.build(pa)
    b.build(pb)
    x.case.child, x.case.files, x.case.parent_tried = pa, [pa, pb], pa


def _deep(x, nfiles):
    base = x.image(vs=2 * MiB)
    imgs = [base]
    for k in range(1, nfiles):
        imgs.append(make_child(imgs[-1], seed=x.seed + k))
    stamp_sectors(imgs[-1], "TOP", 512, 1024, partial=True)
    ch = Chain(imgs, names=["base.vhdx"] + ["d%03d.avhdx" % k for k in range(1, nfiles)],
               locators={"volume": None, "absolute": None})
    x.case.chain = ch
    x.build(ch)
    if nfiles > 200 and sys.getrecursionlimit() < 20 * nfiles:
        sys.setrecursionlimit(20 * nfiles)          # model reads recurse once per level


@_bc("depth_at_limit", OK, None, "a chain of exactly depth_limit files (the base and "
     "depth_limit - 1 children, all but the top empty) opens")
def _(x):
    _deep(x, x.case.depth_limit)


@_bc("depth_over_limit", REJECT, "depth", "a chain of depth_limit + 1 files: too deep")
def _(x):
    _deep(x, x.case.depth_limit + 1)
    x.case.parent_tried = None


# --- where the parent is found -----------------------------------------------------------
@_bc("relative_missing_volume_path", OK, None, "relative_path names a missing file; "
     "volume_path (\\\\?\\Volume{...}\\base.vhdx) finds the parent")
def _(x):
    x.standard(locators={"relative": ".\\gone.vhdx"})
    x.case.via = "volume_path"


@_bc("relative_missing_absolute_win32", OK, None, "relative_path names a missing file, no "
     "volume_path; absolute_win32_path C:\\base.vhdx (Hyper-V form, no \\\\?\\) finds it")
def _(x):
    x.standard(locators={"relative": ".\\gone.vhdx", "volume": None})
    x.case.via = "absolute_win32_path"


@_bc("absolute_prefixed_only", OK, None, "only absolute_win32_path, as \\\\?\\C:\\base.vhdx")
def _(x):
    x.standard(locators={"relative": None, "volume": None, "absolute": "prefixed"})
    x.case.via = "absolute_win32_path"


@_bc("relative_updir", OK, None, "child in vm\\, parent in golden\\: relative_path "
     "..\\golden\\base.vhdx (volume and absolute paths name a wrong place)")
def _(x):
    x.standard(dirs=["golden", "vm"], locators={"volume": "\\\\?\\Volume{%s}\\x\\base.vhdx"
                                                % uuid.UUID(int=7), "absolute": "C:\\x\\base.vhdx"})


@_bc("relative_plain_name", OK, None, "relative_path base.vhdx (no .\\ prefix)")
def _(x):
    x.standard(locators={"relative": "plain"})


def _decoy(x, name):
    """A valid VHDX at `name` whose DataWriteGuid matches nothing."""
    d = x.image(tag="DECOY", seed=99)
    p = os.path.join(x.d, name)
    d.build(p)
    x.case.files.append(p)
    return p


@_bc("relative_wins_over_absolute", OK, None, "relative_path finds the parent; "
     "absolute_win32_path names another existing VHDX (a reader tries relative_path first)")
def _(x):
    x.standard(locators={"absolute": "C:\\decoy.vhdx", "volume": None})
    _decoy(x, "decoy.vhdx")


@_bc("relative_wrong_linkage_absolute_right", EITHER, "linkage", "relative_path names an "
     "existing VHDX with another DataWriteGuid; absolute_win32_path names the right parent. "
     "The oracle refuses (the first file found is the parent); a reader that goes on to the "
     "next key must then read the right parent")
def _(x):
    x.standard(locators={"relative": ".\\decoy.vhdx", "volume": None})
    x.case.parent_tried = _decoy(x, "decoy.vhdx")
    x.case.via = "absolute_win32_path"          # (if a reader goes on past the decoy)


# --- sector bitmaps in the child --------------------------------------------------------------
_ONE_PARTIAL = ("not_present", "partial", "full", "zero", "not_present", "full", "unmapped",
                "undefined")         # block 1 is the only PARTIALLY_PRESENT block


@_bc("partial_without_sb", NO_SILENT, "bitmap", "a PARTIALLY_PRESENT block whose chunk's "
     "sector-bitmap entry is SB_BLOCK_NOT_PRESENT (`check` must report it)")
def _(x):
    ch = x.standard(states=_ONE_PARTIAL)
    ed = x.editor()
    ed.put("<Q", x.sb_entry_offset(ch.layouts[-1]), SB_NOT_PRESENT)
    ed.close()
    x.case.affected = (MiB, MiB)
    x.case.parent_tried = None


def _sb_point_at(x, where):
    ch = x.standard()
    lay = ch.layouts[-1]
    ed = x.editor()
    ed.put("<Q", x.sb_entry_offset(lay), SB_PRESENT | where(lay, ed))
    ed.close()
    x.case.parent_tried = None


@_bc("sb_overlaps_payload", REJECT, "overlap", "the sector-bitmap block is the child's "
     "FULLY_PRESENT block")
def _(x):
    _sb_point_at(x, lambda L, e: min(b["file_offset"] for b in L.blocks.values()
                                     if b["state"] == FULLY_PRESENT))


@_bc("sb_overlaps_bat", REJECT, "overlap", "the sector-bitmap block is the BAT region")
def _(x):
    _sb_point_at(x, lambda L, e: L.bat_offset)


@_bc("sb_overlaps_metadata", REJECT, "overlap", "the sector-bitmap block is the metadata "
     "region")
def _(x):
    _sb_point_at(x, lambda L, e: L.metadata_offset)


@_bc("sb_overlaps_log", REJECT, "overlap", "the sector-bitmap block is the log")
def _(x):
    _sb_point_at(x, lambda L, e: L.log_offset)


@_bc("sb_in_header_section", REJECT, "overlap", "SB_BLOCK_PRESENT with FileOffsetMB 0")
def _(x):
    _sb_point_at(x, lambda L, e: 0)


@_bc("sb_past_eof", NO_SILENT, "bitmap", "the sector-bitmap block lies 64 MiB past the end "
     "of the child")
def _(x):
    ch = x.standard(states=_ONE_PARTIAL)
    ed = x.editor()
    ed.put("<Q", x.sb_entry_offset(ch.layouts[-1]),
           SB_PRESENT | _align_up(ed.size(), MiB) + 64 * MiB)
    ed.close()
    x.case.affected = (MiB, MiB)
    x.case.parent_tried = None


@_bc("sb_state_reserved", REJECT, "bat", "the sector-bitmap entry has reserved state 1")
def _(x):
    ch = x.standard()
    ed = x.editor()
    p = x.sb_entry_offset(ch.layouts[-1])
    ed.put("<Q", p, (ed.get("<Q", p) & ~7) | 1)
    ed.close()
    x.case.parent_tried = None


@_bc("sb_duplicate_offset", REJECT, "overlap", "4 GiB + 2 MiB child, two chunks: both "
     "sector-bitmap entries point at the same 1 MiB")
def _(x):
    vs = 4 * GiB + 2 * MiB
    base = Image(vs, block_size=MiB, seed=x.seed)
    stamp_sectors(base, "BASE", 0, MiB)
    child = make_child(base)
    stamp_sectors(child, "DIFF1", 512, 512, partial=True)
    stamp_sectors(child, "DIFF1", 4 * GiB + 512, 512, partial=True)
    ch = x.build(Chain([base, child]))
    x.case.chain = ch
    lay = ch.layouts[-1]
    ed = x.editor()
    ed.put("<Q", x.sb_entry_offset(lay, 1), ed.get("<Q", x.sb_entry_offset(lay, 0)))
    ed.close()
    x.case.parent_tried = None


def _bits(x, block, value):
    """Overwrite the child's bitmap bits of `block` with `value` (0x00 or 0xFF)."""
    ch = x.case.chain
    lay = ch.layouts[-1]
    spb = lay.block_size // lay.logical_sector
    ed = x.editor()
    ed.write(lay.sb[block // lay.chunk_ratio]["file_offset"] +
             (block % lay.chunk_ratio) * spb // 8, bytes([value]) * (spb // 8))
    ed.close()


@_bc("not_present_block_bits_set", OK, None, "every bitmap bit of a NOT_PRESENT block is "
     "set: the block still reads from the parent (bits matter only for PARTIALLY_PRESENT)")
def _(x):
    x.standard()
    _bits(x, EVERY_STATE.index("not_present"), 0xFF)


@_bc("zero_block_bits_set", OK, None, "every bitmap bit of a ZERO block is set: it still "
     "reads zeros")
def _(x):
    x.standard()
    _bits(x, EVERY_STATE.index("zero"), 0xFF)


@_bc("full_block_bits_clear", OK, None, "a FULLY_PRESENT block whose bitmap bits are all "
     "clear (as written): it reads from the child, the bitmap is not consulted")
def _(x):
    x.standard()
    _bits(x, EVERY_STATE.index("full"), 0x00)


# --- dirty logs ------------------------------------------------------------------------------
@_bc("parent_dirty_log", OK, None, "the parent has a dirty log that makes block 2 (NOT_PRESENT "
     "in the child) FULLY_PRESENT with new data: the child reads the replayed parent "
     "(replayed in memory; the parent file is not written)")
def _(x):
    ch = x.standard(build=False)
    ch.images[0].log().set_block(EVERY_STATE.index("not_present"), data=b"REPLAYED" * 512)
    x.build(ch)


@_bc("child_dirty_log", OK, None, "the child has a dirty log that makes block 7 (NOT_PRESENT "
     "in place) ZERO: after replay it reads zeros, not the parent")
def _(x):
    ch = x.standard(build=False, states=EVERY_STATE[:7] + ("not_present",))
    ch.images[1].log().set_bat(7, ZERO)
    x.build(ch)


# ---------------------------------------------------------------------------------------------

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "list":
        for c in CORRUPTIONS.values():
            print("%-36s %-14s %s" % (c.name, c.outcome, c.description))
        print("%d corruptions" % len(CORRUPTIONS))
    elif len(sys.argv) > 1 and sys.argv[1] == "chains":
        for c in BAD_CHAINS.values():
            print("%-38s %-14s %-15s %s" % (c.name, c.outcome, c.reason or "", c.description))
        print("%d bad chains" % len(BAD_CHAINS))
    else:
        print(__doc__)
