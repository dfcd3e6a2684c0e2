#!/usr/bin/env bash
# Installs everything vpclab needs on a Debian machine: the engines it drives
# (iproute2, nftables, conntrack, HAProxy, dumpcap/tshark, tcpdump) and the
# Python package with its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PACKAGES=(iproute2 nftables conntrack util-linux procps tcpdump tshark ethtool haproxy
          curl netcat-openbsd iputils-ping socat iptables  # iptables: xt TTL, see plan KEEP_TTL
          python3 python3-pip python3-yaml python3-dnslib  # Debian's python3 runs the rootless lab test
          clang libbpf-dev libbpf1 linux-libc-dev)          # the GWLB node's eBPF fast path
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! $PY -m pip install -q -e '.[test]' 2>/tmp/vpclab-pip.err; then
  if grep -q externally-managed /tmp/vpclab-pip.err; then
    $PY -m pip install -q --break-system-packages -e '.[test]'
  else
    cat /tmp/vpclab-pip.err >&2
    exit 1
  fi
fi
# The GWLB eBPF fast path (vpclab/engines/gwlb/fastpath.bpf.o). Optional: without it the
# node keeps its Python data path, so a failed build only warns.
if ! $PY -m vpclab.engines.gwlb.fastpath build; then
  echo "install.sh: warning: the GWLB eBPF fast path did not build; vpclab falls back to the Python data path" >&2
fi
echo "install.sh: vpclab $($PY -c 'import importlib.metadata as m; print(m.version("vpclab"))') is installed"
