"""The IP-sync function's shell on real loopback sockets: its A query against the VPC
resolver's engine, a resolver that never answers (the run fails and changes nothing), and a
whole run's registrations through a change API."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket

from vpclab.daemon import ipsync
from vpclab.engines.dns.resolver import Record, Resolver, Zone
from vpclab.plan.wiring import Service

NAME = "internal-web-alb-1.us-east-1.elb.amazonaws.com"


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def _serve(sock: socket.socket, resolver: Resolver, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), 0.2)
        except asyncio.TimeoutError:
            continue
        await loop.sock_sendto(sock, resolver.answer(data), peer)


def _resolver(*ips: str) -> Resolver:
    return Resolver([Zone("elb.amazonaws.com", {NAME: [Record("A", ip, 60) for ip in ips]})])


def test_query_reads_the_resolvers_a_records():
    async def main():
        server, client, stop = _udp(), _udp(), asyncio.Event()
        task = asyncio.ensure_future(_serve(server, _resolver("10.0.11.4", "10.0.12.4"), stop))
        try:
            return await ipsync.query_a(client, server.getsockname(), NAME, timeout=2)
        finally:
            stop.set()
            await task
            server.close()
            client.close()
    assert sorted(asyncio.run(main())) == ["10.0.11.4", "10.0.12.4"]


async def _invoke_serving(fn: ipsync.IpSyncFunction, server: socket.socket, *ips: str) -> dict:
    """One run of `fn` while `server` answers the ALB's name with `ips`."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(_serve(server, _resolver(*ips), stop))
    try:
        return await fn.invoke()
    finally:
        stop.set()
        await task


def _function(store: dict, calls: list, registered: set) -> ipsync.IpSyncFunction:
    env = (("ALB_DNS_NAME", NAME), ("INVOCATIONS_BEFORE_DEREGISTRATION", "3"), ("MAX_LOOKUP_PER_INVOCATION", "5"))
    svc = Service("router:main", "lambda_function", (), (("function", "sync"), ("resolver", "127.0.0.1"),
                  ("environment", env), ("target_group", "alb-ips"), ("port", 443), ("schedule_seconds", 0)))
    fn = ipsync.IpSyncFunction(svc, lambda _ns: contextlib.nullcontext(), lambda _g: set(registered),
                               lambda kind, params: calls.append((kind, params)) or {}, store.get, store.__setitem__)
    return fn


def test_a_silent_resolver_fails_the_run_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(ipsync, "DNS_TIMEOUT", 0.3)
    silent = _udp()  # bound, never answers
    store = {"lambda/sync/state": json.dumps({"active": ["10.0.11.4"], "pending": {"10.0.12.4": 1}})}
    calls: list = []
    fn = _function(store, calls, {"10.0.11.4", "10.0.12.4"})
    monkeypatch.setattr(fn, "_server", lambda: silent.getsockname())
    status = asyncio.run(fn.invoke())
    silent.close()
    assert status["last_run"]["ok"] is False and "timed out" in status["last_run"]["log"][0]
    assert calls == [] and json.loads(store["lambda/sync/state"])["pending"] == {"10.0.12.4": 1}


def test_a_run_registers_new_ips_and_saves_its_state(monkeypatch):
    server, store, calls = _udp(), {}, []
    fn = _function(store, calls, {"10.0.11.4", "10.0.12.4"})
    monkeypatch.setattr(fn, "_server", lambda: server.getsockname())
    status = asyncio.run(_invoke_serving(fn, server, "10.0.11.5", "10.0.12.4"))
    server.close()
    assert calls == [("register-targets", {"target_group": "alb-ips", "targets": [{"Id": "10.0.11.5", "Port": 443}]})]
    assert status["last_run"]["LoadBalancerIPCount"] == 2 and status["runs"] == 1
    assert json.loads(store["lambda/sync/state"]) == {"active": ["10.0.11.5", "10.0.12.4"], "pending": {}}


def test_the_run_after_a_failed_one_recovers_from_the_same_state(monkeypatch):
    monkeypatch.setattr(ipsync, "DNS_TIMEOUT", 0.3)
    silent, server, calls = _udp(), _udp(), []
    store = {"lambda/sync/state": json.dumps({"active": ["10.0.11.4", "10.0.12.4"], "pending": {}})}
    fn = _function(store, calls, {"10.0.11.4", "10.0.12.4"})
    monkeypatch.setattr(fn, "_server", lambda: silent.getsockname())
    assert asyncio.run(fn.invoke())["last_run"]["ok"] is False
    monkeypatch.setattr(fn, "_server", lambda: server.getsockname())
    status = asyncio.run(_invoke_serving(fn, server, "10.0.11.5", "10.0.12.4"))
    silent.close()
    server.close()
    # the failed run counted nothing: 10.0.11.4 has missed one run, not two
    assert status["last_run"]["ok"] and status["runs"] == 2 and status["missed_runs"] == {"10.0.11.4": 1}
    assert calls == [("register-targets", {"target_group": "alb-ips", "targets": [{"Id": "10.0.11.5", "Port": 443}]})]
