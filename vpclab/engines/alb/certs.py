"""HTTPS listener certificates: a lab's own CA, the ACM-like certificates it issues, and
certificates named by file in the lab file (checked before HAProxy sees them).

Everything lives under `<state dir>/alb-certs/` (0700; keys and combined PEMs 0600):
  ca.pem, ca.key             the lab's CA, made once per lab (`curl --cacert <ca.pem>`);
  <name>.pem                 what HAProxy's `crt` reads: certificate (chain), then key.
An issued certificate names DomainName as its subject and DomainName + SubjectAlternativeNames
as DNS names (RSA 2048 and 395 days, as ACM issues). A named file must be a regular file of at
most MAX_FILE bytes holding PEM, and the key must belong to the first certificate.
Uses the `cryptography` package (pyproject.toml; Debian's python3-cryptography).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import os
import re
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DIRECTORY = "alb-certs"
MAX_FILE = 64 * 1024
KEY_BITS = 2048
LEAF_DAYS, CA_DAYS = 395, 3650
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS = re.compile(r"(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class CertificateError(ValueError):
    """A certificate the lab names cannot be used: the message names the file and the reason."""


def _directory(state_dir: str | os.PathLike) -> Path:
    path = Path(state_dir) / DIRECTORY
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise CertificateError(f"{path}: not a directory")
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path` with mode 0600 from the start, replacing it atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


@contextlib.contextmanager
def _locked(directory: Path):
    """One issuer at a time per lab: two nodes starting together must not make two CAs."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def lab_ca(state_dir: str | os.PathLike) -> Path:
    """The path of the lab's CA certificate, made on first use (its key beside it, 0600)."""
    directory = _directory(state_dir)
    with _locked(directory):
        return _lab_ca(directory)


def _lab_ca(directory: Path) -> Path:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        _load_ca(directory)  # refuse a damaged CA rather than issue from it
        return cert_path
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vpclab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"vpclab lab CA {os.urandom(4).hex()}")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def _load_ca(directory: Path):
    cert = x509.load_pem_x509_certificate(_read_checked(directory / "ca.pem"))
    key = serialization.load_pem_private_key(_read_checked(directory / "ca.key"), password=None)
    return cert, key


def dns_names(certificate: dict) -> list[str]:
    """DomainName then the SubjectAlternativeNames, without repeats, each a valid DNS name."""
    names = []
    for name in [certificate["domain_name"], *certificate.get("subject_alternative_names", [])]:
        if not isinstance(name, str) or len(name) > 253 or not _DNS.fullmatch(name):
            raise CertificateError(f"certificate {certificate.get('name')!r}: {name!r} is not a domain name "
                                   "(a wildcard only as the whole left-most label)")
        if name.lower() not in (n.lower() for n in names):
            names.append(name)
    return names


def issue(ca_cert, ca_key, names: list[str]) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `names`, signed by the CA."""
    key = _new_key()
    now = _now()
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _file_name(certificate: dict) -> str:
    name = str(certificate.get("name") or "")
    if _SAFE.fullmatch(name):
        return f"{name}.pem"
    return "cert-" + hashlib.sha256(name.encode()).hexdigest()[:16] + ".pem"  # a hostile name never reaches a path


def _read_checked(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file of at most MAX_FILE bytes (never a FIFO, device or directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise CertificateError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CertificateError(f"{path}: not a regular file")
        if info.st_size > MAX_FILE:
            raise CertificateError(f"{path}: {info.st_size} bytes, over the {MAX_FILE} a certificate file may have")
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise CertificateError(f"{path}: over the {MAX_FILE} bytes a certificate file may have")
    return data


def check_files(certificate_file: str | os.PathLike, private_key_file: str | os.PathLike) -> bytes:
    """The PEM HAProxy reads (certificates, then the key) from files named in the lab file,
    after checking that they are PEM and that the key belongs to the first certificate."""
    cert_data, key_data = _read_checked(certificate_file), _read_checked(private_key_file)
    try:
        chain = x509.load_pem_x509_certificates(cert_data) if hasattr(x509, "load_pem_x509_certificates") \
            else [x509.load_pem_x509_certificate(cert_data)]
    except ValueError:
        raise CertificateError(f"{certificate_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(f"{private_key_file}: not an unencrypted PEM private key ({e})") from None
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertificateError(f"{private_key_file}: the key does not belong to the certificate in {certificate_file}")
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain) + _key_pem(key)


def listener_pem(state_dir: str | os.PathLike, certificate: dict) -> Path:
    """The combined PEM for HAProxy's `crt` for one listener certificate (an entry of
    alb_node_config's listener "certificate"): issued by the lab CA, or from the named files."""
    directory = _directory(state_dir)
    path = directory / _file_name(certificate)
    if certificate.get("certificate_file"):
        if not certificate.get("private_key_file"):
            raise CertificateError(f"certificate {certificate.get('name')!r}: CertificateFile needs PrivateKeyFile")
        _write_private(path, check_files(certificate["certificate_file"], certificate["private_key_file"]))
        return path
    names = dns_names(certificate)
    with _locked(directory):
        ca_cert, ca_key = _load_ca(_lab_ca(directory).parent)
        if path.exists() and _still_good(path, ca_cert, names):
            return path  # the same certificate across restarts and reloads
        cert_pem, key_pem = issue(ca_cert, ca_key, names)
        _write_private(path, cert_pem + key_pem)
    return path


def _still_good(path: Path, ca_cert, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(_read_checked(path))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, CertificateError, x509.ExtensionNotFound):
        return False
    have = [str(v) for v in sans.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
    expires = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=dt.timezone.utc)
    return cert.issuer == ca_cert.subject and have == names and expires > _now() + dt.timedelta(days=1)
