"""ACM certificates in the lab file (`certificates`), for HTTPS listeners.

A certificate is either issued by the lab's own CA (`DomainName`, `SubjectAlternativeNames`) or
imported from PEM files (`CertificateFile`, `PrivateKeyFile`). The files are user input, so:
- a relative path is relative to the lab file's directory and must stay inside it, symlinks
  resolved (no `../../etc/...`); a file elsewhere must be named by its absolute path, which
  whoever reads the lab file then sees;
- each must be a regular file (never a FIFO, device or directory: it is opened without
  blocking and checked before it is read) of at most 64 KiB, holding a PEM certificate or
  private key; a key's contents never reach a message.
The model stores the resolved absolute paths; engines.alb.certs reads them again when it builds
the listener's PEM.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from ..reader import NAMES, TEXT, Field, _Invalid, _Spec

MAX_PEM_BYTES = 64 * 1024
MAX_ALTERNATIVE_NAMES = 10  # ACM's default quota of names per certificate, the domain name aside
_DOMAIN = re.compile(r"(?=.{1,253}$)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")

CERTIFICATE_FIELDS: dict[str, Field] = {
    "DomainName": TEXT,
    "SubjectAlternativeNames": NAMES,
    "CertificateFile": TEXT,
    "PrivateKeyFile": TEXT,
}


def domain_name(value: str, path: str) -> str:
    """A certificate's name: a DNS name, its first label `*` for a wildcard."""
    name = value.lower().rstrip(".")
    if not _DOMAIN.fullmatch(name):
        raise _Invalid(path, f"'{value[:253]}' is not a domain name like www.example.com or *.example.com")
    return name


def pem_file(value: str, path: str, lab_dir: Path, kind: str) -> str:
    """The absolute path of a PEM file named in the lab file, checked as the module says;
    `kind` is "certificate" or "private key"."""
    if "\0" in value or not value:
        raise _Invalid(path, "expected a file path")
    given = Path(value)
    if given.is_absolute():
        target = given
    else:
        base = lab_dir.resolve()
        target = (base / given).resolve()
        if target != base and base not in target.parents:
            raise _Invalid(path, f"'{value}' leads outside the lab file's directory ({base}); "
                           "name a file elsewhere by its absolute path")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _Invalid(path, f"cannot read {kind} file {target}: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Invalid(path, f"{kind} file {target} is not a regular file")
        if info.st_size > MAX_PEM_BYTES:
            raise _Invalid(path, f"{kind} file {target} is larger than {MAX_PEM_BYTES // 1024} KiB")
        data = os.read(fd, MAX_PEM_BYTES + 1)
    except OSError as e:
        raise _Invalid(path, f"cannot read {kind} file {target}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    marker = b"-----BEGIN CERTIFICATE-----" if kind == "certificate" else b"PRIVATE KEY-----"
    if len(data) > MAX_PEM_BYTES or marker not in data:
        what = "a PEM certificate (-----BEGIN CERTIFICATE-----)" if kind == "certificate" else \
            "a PEM private key (-----BEGIN ... PRIVATE KEY-----)"
        raise _Invalid(path, f"{kind} file {target} does not hold {what}")
    return str(target)


def certificate_props(spec: _Spec, lab_dir: Path) -> dict[str, Any]:
    """A certificate's keys checked: issued (DomainName, SubjectAlternativeNames) or imported
    (CertificateFile and PrivateKeyFile), never both."""
    props = spec.props
    files = [key for key in ("CertificateFile", "PrivateKeyFile") if key in props]
    if files:
        if "DomainName" in props or "SubjectAlternativeNames" in props:
            key = "DomainName" if "DomainName" in props else "SubjectAlternativeNames"
            raise _Invalid(spec.at(key), "an imported certificate's names are in its CertificateFile; give "
                           "DomainName for one the lab's CA issues, or the files, not both")
        missing = ({"CertificateFile", "PrivateKeyFile"} - set(files))
        if missing:
            raise _Invalid(spec.at(missing.pop()), "required key is missing: an imported certificate needs "
                           "CertificateFile and PrivateKeyFile")
        return {"certificate_file": pem_file(props["CertificateFile"], spec.at("CertificateFile"), lab_dir,
                                             "certificate"),
                "private_key_file": pem_file(props["PrivateKeyFile"], spec.at("PrivateKeyFile"), lab_dir,
                                             "private key")}
    if "DomainName" not in props:
        raise _Invalid(spec.at("DomainName"), "required key is missing: a certificate the lab's CA issues needs a "
                       "DomainName (or give CertificateFile and PrivateKeyFile)")
    names = props.get("SubjectAlternativeNames", [])
    if len(names) > MAX_ALTERNATIVE_NAMES:
        raise _Invalid(spec.at("SubjectAlternativeNames"),
                       f"a certificate has at most {MAX_ALTERNATIVE_NAMES} alternative names, got {len(names)}")
    return {"domain_name": domain_name(props["DomainName"], spec.at("DomainName")),
            "subject_alternative_names": tuple(domain_name(name, f"{spec.at('SubjectAlternativeNames')}[{i}]")
                                               for i, name in enumerate(names))}
