"""varstore.py - read and edit a copy of an OVMF variable store (OVMF_VARS*.fd) on the host.

    python3 ovmf-scripts/varstore.py list VARS.fd     the live variables, one a line

Under Secure Boot the UEFI Shell is refused, so a test cannot make boot entries with
`bcfg`; instead it writes them into its copy of the variable store before QEMU starts:
Boot####, BootOrder, Driver####, DriverOrder (UEFI 2.10 section 3.3), or shim's MokList.
Only variables without authentication are written (the firmware would refuse an
unsigned change to PK, KEK, db or dbx at run time, but it does not check what is stored).

The store is EDK II's: a firmware volume header, then a variable store header
(signature: the authenticated-variable GUID) and variables one after the other, each
4-byte aligned: a 60-byte header (StartId 0x55AA, State, Attributes, MonotonicCount,
TimeStamp, PubKeyIndex, NameSize, DataSize, VendorGuid), the UCS-2 name, the data.
State bits are cleared as a variable's life goes on: 0x3F is live (VAR_ADDED), 0x3E is
live while a replacement is written (VAR_IN_DELETED_TRANSITION cleared too), anything
else (0x3D, 0x3C: VAR_DELETED cleared) is dead.  Free space is 0xFF.  Changing a
variable marks the old copy deleted and appends the new one, as the firmware does.

Load options and device paths (UEFI 2.10 sections 3.1.3 and 10.3) are built here too.
"""

import struct
import sys
import uuid

EFI_GLOBAL = uuid.UUID("8BE4DF61-93CA-11D2-AA0D-00E098032B8C")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("D719B2CB-3D3A-4596-A3BC-DAD00E67656F")   # db, dbx
SHIM_LOCK = uuid.UUID("605DAB50-E046-4300-ABB6-3DD810DD8B23")   # MokList
EFI_CERT_X509 = uuid.UUID("A5C059A1-94E4-4AA7-87B5-AB155C2BF072")
AUTH_STORE = uuid.UUID("AAF32C78-947B-439A-A180-2E144EC37792")

NV, BS, RT = 0x1, 0x2, 0x4
VAR_HEADER = struct.Struct("<HBBIQ16sIII16s")       # 60 bytes
VAR_START_ID = 0x55AA
VAR_ADDED, VAR_DELETED_MASK = 0x3F, 0xFD
LIVE_STATES = (0x3F, 0x3E)

LOAD_OPTION_ACTIVE = 0x1
LOAD_OPTION_FORCE_RECONNECT = 0x2


class VarStore:
    """A variable store file in memory; save() writes it back."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = bytearray(f.read())
        if self.data[40:44] != b"_FVH":
            raise ValueError("%s: not a firmware volume (no _FVH signature)" % path)
        self.store = struct.unpack_from("<H", self.data, 48)[0]     # FV HeaderLength
        signature = uuid.UUID(bytes_le=bytes(self.data[self.store:self.store + 16]))
        if signature != AUTH_STORE:
            raise ValueError("%s: variable store %s is not an authenticated one" % (
                path, signature))
        size = struct.unpack_from("<I", self.data, self.store + 16)[0]
        self.end = self.store + size
        self.first = (self.store + 28 + 3) & ~3

    def _records(self):
        """(offset, state, attributes, name, guid, data) of every record, dead or live;
        the last item is the offset of the free space."""
        p = self.first
        while p + VAR_HEADER.size <= self.end:
            (start, state, _, attrs, _, _, _, name_size, data_size,
             guid) = VAR_HEADER.unpack_from(self.data, p)
            if start != VAR_START_ID:
                break
            name_at = p + VAR_HEADER.size
            name = bytes(self.data[name_at:name_at + name_size]).decode("utf-16-le")
            data = bytes(self.data[name_at + name_size:name_at + name_size + data_size])
            yield p, state, attrs, name.rstrip("\0"), uuid.UUID(bytes_le=guid), data
            p = (name_at + name_size + data_size + 3) & ~3
        yield p

    def variables(self):
        """{(name, guid): (attributes, data)} of the live variables."""
        out = {}
        for rec in self._records():
            if isinstance(rec, tuple) and rec[1] in LIVE_STATES:
                out[(rec[3], rec[4])] = (rec[2], rec[5])
        return out

    def get(self, name, guid=EFI_GLOBAL):
        v = self.variables().get((name, guid))
        return v[1] if v else None

    def set(self, name, data, guid=EFI_GLOBAL, attrs=NV | BS | RT):
        """Write a variable without authentication, replacing a live one."""
        free = None
        for rec in self._records():
            if not isinstance(rec, tuple):
                free = rec
            elif rec[1] in LIVE_STATES and rec[3] == name and rec[4] == guid:
                self.data[rec[0] + 2] &= VAR_DELETED_MASK
        encoded = (name + "\0").encode("utf-16-le")
        record = VAR_HEADER.pack(VAR_START_ID, VAR_ADDED, 0, attrs, 0, bytes(16), 0,
                                 len(encoded), len(data), guid.bytes_le) + encoded + data
        if free + len(record) > self.end:
            raise ValueError("%s: no room for %s" % (self.path, name))
        if self.data[free:free + len(record)].count(0xFF) != len(record):
            raise ValueError("%s: the free space at %#x is not blank" % (self.path, free))
        self.data[free:free + len(record)] = record

    def save(self, path=None):
        with open(path or self.path, "wb") as f:
            f.write(self.data)


# ---------------------------------------------------------------------------------------
# Device paths (UEFI 2.10 section 10.3) and load options (section 3.1.3)

def node(kind, subtype, payload):
    return struct.pack("<BBH", kind, subtype, 4 + len(payload)) + payload


END = node(0x7F, 0xFF, b"")


def pci_root():
    """Acpi(PNP0A03,0): the host bridge."""
    return node(2, 1, struct.pack("<II", 0x0A0341D0, 0))


def pci(device, function):
    return node(1, 1, struct.pack("<BB", function, device))


def sata(port, multiplier=0xFFFF, lun=0):
    return node(3, 0x12, struct.pack("<HHH", port, multiplier, lun))


def ahci_disk(port):
    """The AHCI disk QEMU's q35 machine puts on `port` (-drive if=ide):
    PciRoot(0x0)/Pci(0x1F,0x2)/Sata(port,0xFFFF,0x0)."""
    return pci_root() + pci(0x1F, 2) + sata(port)


def hard_drive(number, start, size, part_guid):
    """HD(number,GPT,guid,start,size): a GPT partition, in logical blocks."""
    return node(4, 1, struct.pack("<IQQ16sBB", number, start, size, part_guid.bytes_le,
                                  2, 2))


def vendor_media(guid, data):
    return node(4, 3, guid.bytes_le + data)


def file_path(path):
    return node(4, 4, (path + "\0").encode("utf-16-le"))


def load_option(description, device_path, attrs=LOAD_OPTION_ACTIVE, optional=b""):
    """An EFI_LOAD_OPTION; `device_path` without its end node."""
    path = device_path + END
    return (struct.pack("<IH", attrs, len(path)) + (description + "\0").encode("utf-16-le")
            + path + optional)


def order(numbers):
    return b"".join(struct.pack("<H", n) for n in numbers)


def x509_signature_list(der, owner):
    """An EFI_SIGNATURE_LIST holding one X.509 certificate (UEFI 2.10 section 32.4.1):
    the form of db, KEK and shim's MokList."""
    return (EFI_CERT_X509.bytes_le + struct.pack("<III", 28 + 16 + len(der), 0, 16 + len(der))
            + owner.bytes_le + der)


def gpt_partition(disk, number, sector=512):
    """(first LBA, number of LBAs, partition GUID) of partition `number` of a GPT disk
    image (UEFI 2.10 section 5.3.2 and 5.3.3)."""
    with open(disk, "rb") as f:
        f.seek(sector)
        header = f.read(92)
        if header[:8] != b"EFI PART":
            raise ValueError("%s: no GPT header" % disk)
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        if not 1 <= number <= count:
            raise ValueError("%s: no partition %d" % (disk, number))
        f.seek(entries_lba * sector + (number - 1) * entry_size)
        entry = f.read(entry_size)
    first, last = struct.unpack_from("<QQ", entry, 32)
    return first, last - first + 1, uuid.UUID(bytes_le=entry[16:32])


def main(argv):
    if len(argv) == 3 and argv[1] == "list":
        for (name, guid), (attrs, data) in sorted(VarStore(argv[2]).variables().items()):
            print("%-24s %s attrs %#04x %5d bytes" % (name, guid, attrs, len(data)))
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
