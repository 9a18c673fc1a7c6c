"""secureboot.py - sign EFI programs for Secure Boot (sbsign) and check what was signed.

    python3 ovmf-scripts/secureboot.py sign [--key KEY] [--cert CERT] [--pass PASSPHRASE]
                                            --out DIR FILE...

`make sign` runs it on vhdx.efi and vhdxboot.efi; `make run SECUREBOOT=1` and
tests/secureboot.test import it.  With no --key and --cert it signs with the test key
Debian's OVMF package ships, whose certificate is the only one in the db of
OVMF_VARS_4M.snakeoil.fd (PK, KEK and db all hold it): programs signed with it run under
that firmware with Secure Boot enforcing, and nowhere else.

Each signed file is checked before it counts: `sbverify --cert` against the certificate,
`sbverify --list` without warnings (a gap in the section table is one), and a .sbat
section, when the file had one, still there and unchanged (objdump, objcopy).
"""

import argparse
import os
import subprocess
import sys
import tempfile

SNAKEOIL_KEY = "/usr/share/ovmf/PkKek-1-snakeoil.key"
SNAKEOIL_CERT = "/usr/share/ovmf/PkKek-1-snakeoil.pem"
SNAKEOIL_PASS = "snakeoil"


class SignError(Exception):
    """Signing or its check failed; the message names the file and the reason."""


def _run(cmd, what):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise SignError("%s: %s failed (%d): %s" % (what, cmd[0], p.returncode,
                                                    p.stdout.strip()))
    return p.stdout


def sbat_text(path):
    """The bytes of a PE file's .sbat section, or None when it has none."""
    heads = _run(["objdump", "-h", path], path)
    if not any(line.split()[1:2] == [".sbat"] for line in heads.splitlines()):
        return None
    with tempfile.NamedTemporaryFile() as out:
        _run(["objcopy", "-O", "binary", "-j", ".sbat", path, out.name], path)
        return out.read()


def check_signed(path, cert):
    """Raise SignError unless `path` verifies against `cert` and lists cleanly."""
    _run(["sbverify", "--cert", cert, path], path)
    listing = _run(["sbverify", "--list", path], path)
    if "warning" in listing:
        raise SignError("%s: sbverify --list warns: %s" % (path, listing.strip()))
    if "signature 1" not in listing:
        raise SignError("%s: sbverify --list shows no signature" % path)


class Signer:
    """sbsign with one key and certificate; an encrypted key is decrypted once, into a
    private temporary file removed by close()."""

    def __init__(self, key=SNAKEOIL_KEY, cert=SNAKEOIL_CERT, passphrase=None):
        if passphrase is None and key == SNAKEOIL_KEY:
            passphrase = SNAKEOIL_PASS
        for f, what in ((key, "key"), (cert, "certificate")):
            if not os.path.exists(f):
                raise SignError("%s: no such %s%s" % (f, what, " (package ovmf)" if f in (
                    SNAKEOIL_KEY, SNAKEOIL_CERT) else ""))
        self.cert = cert
        self.key = key
        self.plain = None
        if passphrase:
            fd, self.plain = tempfile.mkstemp(prefix="sign-key-", suffix=".pem")
            os.close(fd)
            _run(["openssl", "pkey", "-in", key, "-passin", "pass:" + passphrase,
                  "-out", self.plain], key)
            self.key = self.plain

    def sign(self, src, dst):
        """Sign `src` into `dst` (through a temporary file) and check the result."""
        tmp = dst + ".tmp"
        _run(["sbsign", "--key", self.key, "--cert", self.cert, "--output", tmp, src], src)
        try:
            check_signed(tmp, self.cert)
            before = sbat_text(src)
            if before is not None and sbat_text(tmp) != before:
                raise SignError("%s: the signed copy lost or changed its .sbat section" % src)
        except SignError:
            os.unlink(tmp)
            raise
        os.replace(tmp, dst)
        return dst

    def sign_if_newer(self, src, dst):
        """Sign unless `dst` is newer than `src` (and than the certificate)."""
        if os.path.exists(dst) and all(os.path.getmtime(dst) >= os.path.getmtime(f)
                                       for f in (src, self.cert)):
            return dst
        return self.sign(src, dst)

    def close(self):
        if self.plain:
            os.unlink(self.plain)
            self.plain = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv):
    ap = argparse.ArgumentParser(prog="secureboot.py sign",
                                 description="Sign EFI programs with sbsign, and check them.")
    ap.add_argument("command", choices=["sign"])
    ap.add_argument("--key", default=SNAKEOIL_KEY)
    ap.add_argument("--cert", default=SNAKEOIL_CERT)
    ap.add_argument("--pass", dest="passphrase", default=None,
                    help="the key's passphrase (else sbsign asks when it needs one)")
    ap.add_argument("--out", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv[1:])
    os.makedirs(args.out, exist_ok=True)
    try:
        with Signer(args.key, args.cert, args.passphrase) as signer:
            for f in args.files:
                dst = signer.sign(f, os.path.join(args.out, os.path.basename(f)))
                sbat = sbat_text(dst)
                print("signed %s: %s%s" % (dst, os.path.basename(args.cert),
                                           ", .sbat kept" if sbat else ""))
    except SignError as e:
        print("sign: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
