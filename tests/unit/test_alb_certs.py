"""HTTPS listener certificates (issue 16): the lab's own CA, certificates it issues for
DomainName + SubjectAlternativeNames, and certificate files named in the lab file."""
from __future__ import annotations

import os
import ssl
import stat
import subprocess

import pytest
from cryptography import x509

from alb_haproxy import _free_port, needs_haproxy, running
from vpclab.engines.alb import certs

SITE = {"name": "site", "domain_name": "www.example.com", "subject_alternative_names": ["*.example.com"],
        "certificate_file": None, "private_key_file": None}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_lab_ca_is_made_once_with_a_private_key_only_its_owner_reads(tmp_path):
    first = certs.lab_ca(tmp_path)
    again = certs.lab_ca(tmp_path)
    assert first == again and first.read_bytes() == again.read_bytes()
    ca = x509.load_pem_x509_certificate(first.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert mode(first.parent) == 0o700 and mode(first.parent / "ca.key") == 0o600


def test_an_issued_certificate_names_domain_name_and_sans_and_chains_to_the_lab_ca(tmp_path):
    pem = certs.listener_pem(tmp_path, SITE)
    assert mode(pem) == 0o600
    leaf = x509.load_pem_x509_certificate(pem.read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["www.example.com", "*.example.com"]
    assert leaf.subject.rfc4514_string() == "CN=www.example.com"
    context = ssl.create_default_context(cafile=str(certs.lab_ca(tmp_path)))
    context.load_cert_chain(str(pem))  # key and certificate belong together
    assert b"PRIVATE KEY" in pem.read_bytes()


def test_the_same_certificate_is_kept_across_restarts_and_reissued_when_its_names_change(tmp_path):
    first = certs.listener_pem(tmp_path, SITE).read_bytes()
    assert certs.listener_pem(tmp_path, SITE).read_bytes() == first
    changed = certs.listener_pem(tmp_path, {**SITE, "subject_alternative_names": ["api.example.com"]}).read_bytes()
    assert changed != first


@pytest.mark.parametrize("bad", ["www..example.com", "a.*.example.com", "-x.example.com", "x" * 254, "has space.com"])
def test_a_name_that_is_not_a_domain_name_is_refused(tmp_path, bad):
    with pytest.raises(certs.CertificateError, match="not a domain name"):
        certs.listener_pem(tmp_path, {**SITE, "domain_name": bad})


def test_a_hostile_certificate_name_never_reaches_a_path(tmp_path):
    pem = certs.listener_pem(tmp_path, {**SITE, "name": "../../etc/passwd"})
    assert pem.parent == tmp_path / certs.DIRECTORY and ".." not in pem.name


def own_files(tmp_path):
    """A certificate and key made outside the lab, as a user would name them in the lab file."""
    cert_pem, key_pem = certs.issue(*certs._load_ca(certs.lab_ca(tmp_path / "other").parent), ["own.example.org"])
    (tmp_path / "own.pem").write_bytes(cert_pem)
    (tmp_path / "own.key").write_bytes(key_pem)
    return {"name": "own", "domain_name": None, "subject_alternative_names": [],
            "certificate_file": str(tmp_path / "own.pem"), "private_key_file": str(tmp_path / "own.key")}


def test_named_files_are_combined_for_haproxy(tmp_path):
    named = own_files(tmp_path)
    pem = certs.listener_pem(tmp_path / "state", named)
    data = pem.read_bytes()
    assert data.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" in data and mode(pem) == 0o600


def test_a_key_that_does_not_belong_to_the_certificate_is_refused_naming_both_files(tmp_path):
    named = own_files(tmp_path)
    (tmp_path / "x").mkdir()
    other = own_files(tmp_path / "x")
    with pytest.raises(certs.CertificateError, match="does not belong") as caught:
        certs.listener_pem(tmp_path / "state", {**named, "private_key_file": other["private_key_file"]})
    assert named["certificate_file"] in str(caught.value)


def test_a_file_that_is_not_pem_is_refused(tmp_path):
    named = own_files(tmp_path)
    (tmp_path / "own.pem").write_text("hello")
    with pytest.raises(certs.CertificateError, match="not a PEM certificate"):
        certs.listener_pem(tmp_path / "state", named)


def test_a_special_file_is_never_read(tmp_path):
    named = own_files(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening a FIFO for reading would block forever without O_NONBLOCK
    with pytest.raises(certs.CertificateError, match="not a regular file"):
        certs.listener_pem(tmp_path / "state", {**named, "certificate_file": str(fifo)})
    with pytest.raises(certs.CertificateError, match="not a regular file"):
        certs.listener_pem(tmp_path / "state", {**named, "private_key_file": "/dev/zero"})


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    named = own_files(tmp_path)
    (tmp_path / "own.pem").write_bytes(b"x" * (certs.MAX_FILE + 1))
    with pytest.raises(certs.CertificateError, match="over the"):
        certs.listener_pem(tmp_path / "state", named)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(certs.CertificateError, match="missing.pem: cannot be read"):
        certs.listener_pem(tmp_path, {**SITE, "certificate_file": str(tmp_path / "missing.pem"),
                                      "private_key_file": str(tmp_path / "missing.key")})


@needs_haproxy()
def test_haproxy_serves_the_issued_certificate_and_a_client_trusting_the_lab_ca_verifies_it(tmp_path):
    pem = certs.listener_pem(tmp_path, SITE)
    port = _free_port()
    config = (f"defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n"
              f"frontend fe_https\n  bind 127.0.0.1:{port} ssl crt {pem}\n"
              "  http-request return status 200 content-type text/plain string ok\n")
    with running(config, tmp_path, port):
        result = subprocess.run(["curl", "-sS", "--cacert", str(certs.lab_ca(tmp_path)),
                                 "--resolve", f"api.example.com:{port}:127.0.0.1", f"https://api.example.com:{port}/"],
                                capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "ok"), result.stderr
