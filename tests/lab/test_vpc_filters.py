"""Network ACLs, middlebox routes and the source/destination check, with real traffic."""
from __future__ import annotations

import pytest

from conftest import LABS

pytestmark = pytest.mark.lab


def _forwarded(lab, node: str) -> int:
    """IP datagrams the node's kernel forwarded (from /proc/net/snmp)."""
    lines = [l.split() for l in lab.sh(node, "cat /proc/net/snmp").stdout.splitlines() if l.startswith("Ip:")]
    return int(dict(zip(lines[0], lines[1]))["ForwDatagrams"])


@pytest.fixture
def filters(up):
    return up(LABS / "filters.yaml", "filters")


def test_network_acl_rules_apply_lowest_number_first(filters):
    url = f"http://{filters.instance('web-ordered')['public_ip']}/"
    assert filters.curl("client", url).startswith("web-ordered ")  # rule 90 allows the client
    assert filters.curl("server", url, timeout=2) == ""  # rule 100 denies everyone else


def test_network_acl_is_stateless_so_replies_need_their_own_rule(filters):
    # Inbound port 80 is allowed and the security group would allow the reply,
    # but the ACL's egress rules do not cover the client's ephemeral port.
    url = f"http://{filters.instance('web-stateless')['public_ip']}/"
    assert filters.curl("client", url, timeout=2) == ""


def test_default_network_acl_allows_everything(filters):
    url = f"http://{filters.instance('web-open')['public_ip']}/"
    assert filters.curl("server", url).startswith("web-open ")


def test_network_acl_does_not_apply_within_its_subnet(filters):
    # web-ordered's ACL denies port 80 from most sources, but only at the subnet boundary:
    # from web-open (another subnet) it is denied, as the boundary is crossed.
    ordered = filters.instance("web-ordered")["private_ip"]
    assert filters.curl("web-open", f"http://{ordered}/", timeout=2) == ""


def _middlebox_lab(up, tmp_path, check: bool):
    text = (LABS / "middlebox.yaml").read_text().replace("SOURCE_DEST_CHECK", "true" if check else "false")
    return up(text, "mbox-on" if check else "mbox-off")


def test_middlebox_route_carries_traffic_through_instance_with_source_dest_check_off(up, tmp_path):
    lab = _middlebox_lab(up, tmp_path, check=False)
    before = _forwarded(lab, "mbox")
    assert lab.curl("app-1", "http://10.0.2.10/").startswith("db-1 ")
    assert _forwarded(lab, "mbox") > before  # the request crossed the middlebox
    # db-1's subnet has no middlebox route, so its replies go straight back (asymmetric, as at AWS)


def test_middlebox_with_source_dest_check_on_drops_traffic_not_its_own(up, tmp_path):
    lab = _middlebox_lab(up, tmp_path, check=True)
    assert lab.curl("app-1", "http://10.0.2.10/", timeout=2) == ""
    assert lab.curl("app-1", "http://10.0.3.10/").startswith("mbox ")  # its own traffic still flows
