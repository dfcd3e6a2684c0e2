"""examples/route53-private-zone.yaml: private hosted zones answered by the VPC resolver, with real packets."""
from __future__ import annotations

import json
import shlex

import pytest

from conftest import ROOT

pytestmark = pytest.mark.lab
LAB = ROOT / "examples" / "route53-private-zone.yaml"

# Asks one resolver directly and prints the reply: rcode, aa flag, answers as [type, data].
DIG = """
import json, socket, sys, dnslib
name, qtype, server = sys.argv[1:4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(dnslib.DNSRecord.question(name, qtype).pack(), (server, 53))
r = dnslib.DNSRecord.parse(s.recv(4096))
print(json.dumps({"rcode": dnslib.RCODE[r.header.rcode], "aa": r.header.aa,
                  "answers": [[dnslib.QTYPE[a.rtype], str(a.rdata)] for a in r.rr]}))
"""


@pytest.fixture
def lab(up):
    return up(LAB, "r53")


def getent(lab, node: str, name: str):
    """The fields of `getent hosts name`, or None when it fails."""
    r = lab.sh(node, f"getent hosts {name}", check=False)
    return r.stdout.split() if r.returncode == 0 else None


def dig(lab, node: str, name: str, qtype: str = "A", server: str = "10.0.0.2") -> dict:
    out = lab.sh(node, f"python3 -c {shlex.quote(DIG)} {name} {qtype} {server}").stdout
    return json.loads(out)


def test_instance_resolves_a_private_zone_record_via_the_vpc_resolver(lab):
    assert getent(lab, "app-1", "web.example.local") == ["10.0.1.10", "web.example.local"]
    reply = dig(lab, "app-1", "web.example.local")
    assert reply == {"rcode": "NOERROR", "aa": 1, "answers": [["A", "10.0.1.10"]]}


def test_name_in_the_zone_without_a_record_is_nxdomain_with_no_fallback(lab):
    assert getent(lab, "web-1", "nothing.example.local") is None
    reply = dig(lab, "web-1", "nothing.example.local")
    assert (reply["rcode"], reply["aa"], reply["answers"]) == ("NXDOMAIN", 1, [])


def test_most_specific_private_zone_wins(lab):
    # example.local also has api.sub.example.local (10.0.1.99) and other.sub.example.local:
    # sub.example.local is more specific, so it alone answers below it.
    assert getent(lab, "web-1", "api.sub.example.local") == ["10.0.1.20", "api.sub.example.local"]
    assert dig(lab, "web-1", "other.sub.example.local")["rcode"] == "NXDOMAIN"


def test_cname_is_followed_within_the_zones(lab):
    assert dig(lab, "web-1", "www.example.local") == {
        "rcode": "NOERROR", "aa": 1,
        "answers": [["CNAME", "web.example.local."], ["A", "10.0.1.10"]],
    }
    fields = getent(lab, "web-1", "www.example.local")
    assert fields[0] == "10.0.1.10" and "www.example.local" in fields


def test_alias_answers_with_its_targets_a_records_even_at_the_apex(lab):
    assert getent(lab, "web-1", "example.local") == ["10.0.1.10", "example.local"]
    # an alias to app-1's private hostname
    assert dig(lab, "web-1", "app.example.local")["answers"] == [["A", "10.0.1.20"]]


def test_txt_record_answers_its_text(lab):
    assert dig(lab, "web-1", "txt.example.local", "TXT")["answers"] == [["TXT", '"hello"']]


def test_vpc_not_associated_does_not_see_the_zone(lab):
    assert dig(lab, "other-1", "ip-10-1-1-10.ec2.internal", server="10.1.0.2")["answers"] == [["A", "10.1.1.10"]]
    assert getent(lab, "other-1", "web.example.local") is None
    reply = dig(lab, "other-1", "web.example.local", server="10.1.0.2")
    assert (reply["rcode"], reply["aa"], reply["answers"]) == ("NXDOMAIN", 1, [])  # the lab's public zone says so


def test_associated_vpc_without_dns_hostnames_does_not_answer_the_zone(lab):
    assert getent(lab, "quiet-1", "web.example.local") is None
    reply = dig(lab, "quiet-1", "web.example.local", server="10.2.0.2")  # the resolver is there, and answers
    assert (reply["rcode"], reply["answers"]) == ("NXDOMAIN", [])
