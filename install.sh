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
          python3-cryptography                               # the ALB's lab CA (engines/alb/certs.py)
          clang libbpf-dev libbpf1 linux-libc-dev           # the GWLB node's eBPF fast path
          nginx wrk)  # bench/alb.py: the backend it starts inside a lab, and the load generator
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  # nginx (and haproxy) are engines vpclab starts inside labs on configs of its own, never host
  # services: a policy-rc.d that refuses every start keeps their packages from starting one, for
  # the length of this install only, unless the machine already has a policy of its own.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# vpclab install.sh: no service starts while it installs\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  status=0
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ -z "$policy" ] || $SUDO rm -f "$policy"
  [ "$status" -eq 0 ] || exit "$status"
  # Nor at boot: a freshly installed nginx is left disabled where systemd runs.
  if printf '%s\n' "${missing[@]}" | grep -qx nginx && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now nginx.service >/dev/null 2>&1 || true
  fi
fi

PY=${PYTHON:-python3}
# pip's complaints go to a private temporary file (a fixed name in /tmp is a symlink attack on root).
PIP_ERR=$(mktemp)
trap 'rm -f "$PIP_ERR"' EXIT
if ! $PY -m pip install -q -e '.[test]' 2>"$PIP_ERR"; then
  if grep -q externally-managed "$PIP_ERR"; then
    $PY -m pip install -q --break-system-packages -e '.[test]'
  else
    cat "$PIP_ERR" >&2
    exit 1
  fi
fi
# Bytecode for every module, now: where PYTHONDONTWRITEBYTECODE is set, each `vpclab` process
# (CLI, daemon, every GWLB node) would otherwise compile all it imports at each start. Python
# checks each .pyc against its source, so an edited module is only compiled in memory again.
$PY -m compileall -q vpclab || echo "install.sh: warning: some modules did not compile (above)" >&2
# The GWLB eBPF fast path (vpclab/engines/gwlb/fastpath.bpf.o). Optional: without it the
# node keeps its Python data path, so a failed build only warns.
if ! $PY -m vpclab.engines.gwlb.fastpath build; then
  echo "install.sh: warning: the GWLB eBPF fast path did not build; vpclab falls back to the Python data path" >&2
fi
echo "install.sh: vpclab $($PY -c 'import importlib.metadata as m; print(m.version("vpclab"))') is installed"
# What this machine's kernel and host give vpclab (informational: optional features may be
# missing; a missing required one is named with how to get it).
if ! $PY -m vpclab doctor; then
  echo "install.sh: warning: vpclab doctor reports a required feature missing (above); labs that need it will refuse to come up" >&2
fi
# Where the `vpclab` command went, and how to reach it if PATH does not.
BIN=$($PY -c 'import os, sysconfig
dirs = [sysconfig.get_path("scripts"), sysconfig.get_path("scripts", os.name + "_user")]
print(next((d for d in dirs if os.path.exists(os.path.join(d, "vpclab"))), dirs[0]))')
if command -v vpclab >/dev/null; then
  echo "install.sh: the vpclab command is $BIN/vpclab; on your PATH, vpclab is $(command -v vpclab)"
else
  echo "install.sh: the vpclab command is $BIN/vpclab; put it on your PATH with:"
  echo "  export PATH=\"$BIN:\$PATH\"   # e.g. in ~/.profile"
fi
