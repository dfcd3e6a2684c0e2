"""The daemon's ALB nodes (daemon.alb): what health verdicts, registrations and rule changes
send to HAProxy, with the runtime socket replaced by a recorder (no HAProxy runs here)."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from test_alb_config import NODE
from vpclab.daemon import alb as daemon_alb


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def run(self, lines):
        self.sent += lines

    def command(self, line):
        self.sent.append(line)
        return ""


class Svc:
    ns = "alb-web-alb-a"

    def param(self, key):
        return {"load_balancer": "web-alb", "availability_zone": "us-east-1a"}[key]


@pytest.fixture
def nodes(tmp_path, monkeypatch):
    health = {"web": {}, "v2": {}}
    configs = {"now": copy.deepcopy(NODE)}
    alb = daemon_alb.AlbNodes(tmp_path, lambda g: health[g], lambda lab, lb, az: copy.deepcopy(configs["now"]))
    alb.prepare(None, [Svc()])
    recorder = Recorder()
    monkeypatch.setattr(daemon_alb.AlbNode, "runtime", lambda self: recorder)
    reloads = []
    alb.nodes[0].pid_file.write_text("4242\n")
    monkeypatch.setattr(daemon_alb.os, "kill",
                        lambda pid, sig: reloads.append((pid, sig, alb.nodes[0].cfg.read_text())))
    return alb, health, configs, recorder, reloads


def test_every_registered_target_serves_before_the_first_verdict(nodes):
    alb = nodes[0]
    text = alb.nodes[0].cfg.read_text()
    assert "server s1 10.0.11.10:80 weight 100" in text and "server s2 10.0.12.10:80 weight 100" in text


def test_an_unhealthy_target_leaves_rotation_through_the_runtime_api_without_a_reload(nodes):
    alb, health, _configs, recorder, reloads = nodes
    health["web"] = {"i-1": {"State": "healthy"}, "i-2": {"State": "unhealthy", "Reason": "Target.Timeout"}}
    alb.health_changed("web", "i-2", health["web"]["i-2"])
    assert recorder.sent == ["set server tg_web/s2 state maint"] and not reloads


def test_registration_fills_a_free_slot_live(nodes):
    alb, health, configs, recorder, reloads = nodes
    configs["now"]["target_groups"]["web"]["targets"].append({"id": "i-3", "ip": "10.0.11.11", "port": 80, "az": "a"})
    health["web"] = {"i-1": {"State": "healthy"}, "i-2": {"State": "healthy"}, "i-3": {"State": "initial"}}
    alb.apply(None)
    assert recorder.sent == ["set server tg_web/s3 addr 10.0.11.11 port 80", "set server tg_web/s3 weight 100",
                             "set server tg_web/s3 state maint"]
    health["web"]["i-3"] = {"State": "healthy"}
    alb.health_changed("web", "i-3", health["web"]["i-3"])
    # web has slow start and i-1, i-2 are healthy: i-3 ramps, its weight down before it takes requests
    assert recorder.sent[-2:] == ["set server tg_web/s3 weight 1", "set server tg_web/s3 state ready"]
    assert not reloads


def test_deregistration_stops_new_requests_then_empties_the_slot(nodes):
    alb, health, configs, recorder, _reloads = nodes
    configs["now"]["target_groups"]["web"]["targets"].pop(0)
    health["web"] = {"i-1": {"State": "draining"}, "i-2": {"State": "healthy"}}
    alb.apply(None)
    assert recorder.sent == ["set server tg_web/s1 state maint"]
    del health["web"]["i-1"]
    alb.health_changed("web", "i-1", {"State": "unused", "Reason": "Target.NotRegistered"})
    assert recorder.sent[-2:] == ["set server tg_web/s1 state maint", "shutdown sessions server tg_web/s1"]


def test_a_rule_change_is_a_reload_with_the_slots_as_they_are(nodes):
    alb, health, configs, recorder, reloads = nodes
    health["web"] = {"i-1": {"State": "healthy"}, "i-2": {"State": "unhealthy"}}
    configs["now"]["listeners"][0]["rules"][2]["action"]["message_body"] = "pang"
    alb.apply(None)
    ((pid, sig, text),) = reloads
    assert (pid, sig) == (4242, daemon_alb.signal.SIGUSR2)  # the master's seamless reload
    assert 'string "pang"' in text and "server s2 10.0.12.10:80 disabled" in text  # unhealthy stays out after the reload


def test_more_targets_than_slots_grow_the_backend_with_a_reload(nodes):
    alb, health, configs, _recorder, reloads = nodes
    targets = [{"id": f"i-{n}", "ip": f"10.0.11.{n}", "port": 80, "az": "a"} for n in range(20, 37)]
    configs["now"]["target_groups"]["web"]["targets"] = targets  # 17 targets: 16 slots are not enough
    health["web"] = {t["id"]: {"State": "healthy"} for t in targets}
    alb.apply(None)
    ((_pid, _sig, text),) = reloads
    assert "server s34 0.0.0.0:80 disabled" in text and "server s35 " not in text  # 2 x 17
    assert "server s1 10.0.11.10:80 disabled" in text  # i-1 drains in its slot, out of rotation
    assert "server s3 10.0.11.20:80 " in text and "server s19 10.0.11.36:80 " in text


def test_slow_start_steps_a_ramp_through_the_runtime_api_and_a_reload_keeps_it(nodes, monkeypatch):
    alb, health, configs, recorder, reloads = nodes
    clock = [1000.0]
    monkeypatch.setattr(daemon_alb.time, "monotonic", lambda: clock[0])
    health["web"] = {"i-1": {"State": "healthy"}, "i-2": {"State": "unhealthy"}}
    alb.on_health("web")  # i-1 is the only healthy target: full share, no ramp
    assert "weight" not in " ".join(recorder.sent)
    health["web"]["i-2"] = {"State": "healthy"}
    alb.on_health("web")
    assert recorder.sent[-2:] == ["set server tg_web/s2 weight 1", "set server tg_web/s2 state ready"]
    assert alb.ramps.ramping() == {"web"}
    clock[0] += 15
    alb.on_health("web")  # what `watch` does once a second
    assert recorder.sent[-1] == "set server tg_web/s2 weight 50"
    configs["now"]["listeners"][0]["rules"][2]["action"]["message_body"] = "pang"
    alb.apply(None)
    ((_pid, _sig, text),) = reloads
    assert "server s2 10.0.12.10:80 weight 50" in text and "server s1 10.0.11.10:80 weight 100" in text
    clock[0] += 15
    alb.on_health("web")
    assert recorder.sent[-1] == "set server tg_web/s2 weight 100" and alb.ramps.ramping() == set()


def test_a_group_no_rule_forwards_to_any_more_leaves_the_node_with_a_reload(nodes):
    alb, health, configs, recorder, reloads = nodes
    del configs["now"]["listeners"][0]["rules"][0]  # `api`, the only rule forwarding to v2
    del configs["now"]["target_groups"]["v2"]
    health["web"] = {"i-1": {"State": "healthy"}, "i-2": {"State": "healthy"}}
    alb.apply(None)
    ((_pid, _sig, text),) = reloads
    assert "backend tg_v2" not in text and "backend tg_web" in text
    assert alb.groups() == {"web"}
    alb.health_changed("v2", "i-9", {"State": "healthy"})  # a late verdict for it is ignored
    assert not any("tg_v2" in line for line in recorder.sent)


class Checker:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def has_target_group(self, group):
        return True

    def register(self, group, target_id, ip, port):
        self.calls.append(("register", group, target_id))

    def mark_unused(self, group, target_id, reason):
        self.calls.append(("unused", group, target_id, str(reason)))


def test_a_group_out_of_use_has_its_targets_unused_and_back_in_use_starts_them_initial(nodes):
    alb, health, configs, _recorder, _reloads = nodes
    lab = SimpleNamespace(target_groups={"v2": SimpleNamespace(targets=[
        SimpleNamespace(id="i-9", ip="10.0.12.20", port=443)])})
    checker = Checker()
    full = copy.deepcopy(configs["now"])
    del configs["now"]["listeners"][0]["rules"][0]
    del configs["now"]["target_groups"]["v2"]
    alb.apply(lab, checker)
    assert checker.calls == [("unused", "v2", "i-9", "Target.NotInUse")]
    configs["now"] = full  # a rule forwards to v2 again
    alb.apply(lab, checker)
    assert checker.calls[1:] == [("register", "v2", "i-9")]
    assert alb.groups() == {"web", "v2"}
