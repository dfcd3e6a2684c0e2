#!/bin/sh
# iptables-hairpin.sh: the AWS "iptables hairpin" GWLB appliance, in nftables.
#
# How it works. A Gateway Load Balancer sends each inspected packet to its
# appliance as GENEVE over UDP: from the GWLB node's IP and a per-flow source
# port, to this instance on UDP 6081. A one-arm appliance must return it to
# the same GWLB IP on 6081, with the same source port and the GENEVE header
# unchanged (reference §1.2). The kernel can do that on its own, with no
# process in the data path:
#
#   prerouting:  udp dport 6081 arriving on $IFACE   -> dnat to ip saddr
#                (destination becomes the GWLB node that sent it; port stays 6081)
#   postrouting: that same connection leaving $IFACE -> masquerade
#                (source becomes this instance's IP; conntrack keeps the
#                 GWLB's source port, so the ports are not swapped)
#
# and forwarding turned on, so the packet goes straight back out $IFACE.
# Redirects are turned off: the kernel would otherwise answer every
# hairpinned packet with an ICMP redirect. The inner packet is never looked
# at, so every flow is allowed; conntrack entries idle out on their own.
#
# GWLB health checks need a listener: this script serves HTTP on TCP
# $HEALTH_PORT (any request gets 200 OK) in the foreground, so both TCP and
# HTTP checks pass while it runs and fail once it stops. SIGTERM or SIGINT
# removes the nft table and stops the listener.
#
# Run it as root in the appliance's network namespace (a lab instance's
# command). Settings, from the environment:
#   HAIRPIN_IFACE        the interface GENEVE arrives on      (default eth0)
#   HAIRPIN_HEALTH_PORT  the health listener's TCP port, 0 for none (default 80)
# Needs nft, and python3 or socat for the health listener.
set -eu

IFACE=${HAIRPIN_IFACE:-eth0}
HEALTH_PORT=${HAIRPIN_HEALTH_PORT:-80}
TABLE=vpclab_hairpin

log() { printf 'iptables-hairpin: %s\n' "$*" >&2; }

sysctl_set() {  # /proc/sys directly: no sysctl binary needed
	if ! printf '%s\n' "$2" > "/proc/sys/$1" 2>/dev/null; then
		log "cannot set $1=$2"
		return 1
	fi
}

sysctl_set "net/ipv4/conf/$IFACE/forwarding" 1
sysctl_set net/ipv4/conf/all/send_redirects 0
sysctl_set "net/ipv4/conf/$IFACE/send_redirects" 0
sysctl_set net/ipv4/conf/all/rp_filter 0 || true
sysctl_set "net/ipv4/conf/$IFACE/rp_filter" 0 || true

nft delete table ip "$TABLE" 2>/dev/null || true
nft -f - <<NFT
table ip $TABLE {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "$IFACE" udp dport 6081 counter dnat to ip saddr
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "$IFACE" ct status dnat udp dport 6081 counter masquerade
	}
}
NFT
log "hairpinning GENEVE (UDP 6081) on $IFACE"

child=""
cleanup() {  # [exit code]
	trap - INT TERM
	[ -n "$child" ] && kill "$child" 2>/dev/null
	nft delete table ip "$TABLE" 2>/dev/null || true
	log "stopped"
	exit "${1:-0}"
}
trap cleanup INT TERM

if [ "$HEALTH_PORT" = 0 ]; then
	while :; do sleep 3600 & child=$!; wait "$child" || true; done
fi

if command -v python3 >/dev/null 2>&1; then
	python3 - "$HEALTH_PORT" <<'PY' &
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    do_HEAD = do_GET
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Ok).serve_forever()
PY
	child=$!
elif command -v socat >/dev/null 2>&1; then
	# Read the request head first: closing with it unread would send a reset.
	socat -T 5 "TCP-LISTEN:$HEALTH_PORT,reuseaddr,fork" \
		SYSTEM:'while read -r l; do [ "$l" = "$(printf "\r")" ] && break; [ -z "$l" ] && break; done; printf "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"' &
	child=$!
else
	log "neither python3 nor socat: no health listener"
	cleanup 1
fi
log "health listener on TCP $HEALTH_PORT"
wait "$child" || true
log "health listener exited"
cleanup 1
