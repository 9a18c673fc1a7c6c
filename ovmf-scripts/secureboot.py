"""secureboot.py - sign EFI programs for Secure Boot (sbsign) and check what was signed.

    python3 ovmf-scripts/secureboot.py sign [--key KEY] [--cert CERT] [--pass PASSPHRASE]
                                            --out DIR FILE...

`make sign` runs it on vhdx.efi and vhdxboot.efi; `make run SECUREBOOT=1` and
tests/secureboot.test import it.  With no --key and --cert it signs with the test key
Debian's OVMF package ships, whose certificate is the only one in the db of
OVMF_VARS_4M.snakeoil.fd (PK, KEK and db all hold it): programs signed with it run under
that firmware with Secure Boot enforcing, and nowhere else.

Each signed file is checked before it counts: `sbverify --cert` against the certificate,
and a .sbat section, when the file had one, still there and unchanged (objdump,
objcopy).  Our own files (`make sign`) must also list without warnings in `sbverify
--list` (data outside the sections, "gaps between PE/COFF sections?", is one); other
projects' files are taken as they come (Debian's systemd-boot and kernel have such
data: the signature covers it all the same).
"""

import argparse
import glob
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


def check_signed(path, cert, strict=False):
    """Raise SignError unless `path` verifies against `cert` and lists a signature (with
    no warning, when `strict`)."""
    _run(["sbverify", "--cert", cert, path], path)
    listing = _run(["sbverify", "--list", path], path)
    if strict and "warning" in listing:
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

    def sign(self, src, dst, strict=False):
        """Sign `src` into `dst` (through a temporary file) and check the result;
        `strict` for our own files (see above)."""
        tmp = dst + ".tmp"
        _run(["sbsign", "--key", self.key, "--cert", self.cert, "--output", tmp, src], src)
        try:
            check_signed(tmp, self.cert, strict)
            before = sbat_text(src)
            if before is not None and sbat_text(tmp) != before:
                raise SignError("%s: the signed copy lost or changed its .sbat section" % src)
        except SignError:
            os.unlink(tmp)
            raise
        os.replace(tmp, dst)
        return dst

    def sign_if_newer(self, src, dst, strict=False):
        """Sign unless `dst` is newer than `src` (and than the certificate)."""
        if os.path.exists(dst) and all(os.path.getmtime(dst) >= os.path.getmtime(f)
                                       for f in (src, self.cert)):
            return dst
        return self.sign(src, dst, strict)

    def close(self):
        if self.plain:
            os.unlink(self.plain)
            self.plain = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def certificate_der(cert):
    """A PEM certificate in DER form (openssl)."""
    p = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise SignError("%s: openssl x509 failed: %s" % (cert, p.stderr.decode().strip()))
    return p.stdout


# Debian's shim, signed by Microsoft's UEFI CA, and its MokManager, signed with Debian's
# key (which shim trusts): package -> file in /usr/lib/shim.
SHIM_FILES = {"shim-signed": "shimx64.efi.signed", "shim-helpers-amd64-signed": "mmx64.efi.signed"}


def debian_shim(cache):
    """{"shimx64.efi": path, "mmx64.efi": path} taken out of Debian's packages, fetched
    into `cache` with `apt-get download` and not installed (shim-signed's scripts would
    set GRUB up on this machine).  Reused while the packages are in the cache.  Raises
    SignError when they cannot be had."""
    os.makedirs(cache, exist_ok=True)
    out = {}
    for package, name in SHIM_FILES.items():
        debs = sorted(glob.glob(os.path.join(cache, package + "_*.deb")))
        if not debs:
            p = subprocess.run(["apt-get", "download", "-q", package], cwd=cache,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            debs = sorted(glob.glob(os.path.join(cache, package + "_*.deb")))
            if not debs:
                raise SignError("apt-get download %s failed: %s" % (package, p.stdout.strip()))
        target = os.path.join(cache, os.path.basename(debs[-1])[:-4] + "." + name)
        if not os.path.exists(target):
            tar = subprocess.run("dpkg-deb --fsys-tarfile '%s' | tar -xO ./usr/lib/shim/%s"
                                 % (debs[-1], name), shell=True, stdout=subprocess.PIPE)
            if tar.returncode != 0 or not tar.stdout:
                raise SignError("%s: no /usr/lib/shim/%s in it" % (debs[-1], name))
            with open(target + ".tmp", "wb") as f:
                f.write(tar.stdout)
            os.replace(target + ".tmp", target)
        out[name.replace(".signed", "")] = target
    return out


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
                dst = signer.sign(f, os.path.join(args.out, os.path.basename(f)),
                                  strict=True)
                sbat = sbat_text(dst)
                print("signed %s: %s%s" % (dst, os.path.basename(args.cert),
                                           ", .sbat kept" if sbat else ""))
    except SignError as e:
        print("sign: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
