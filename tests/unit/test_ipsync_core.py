"""The IP-sync function's decisions (reference §5.1), without DNS or a load balancer."""
from vpclab.engines.ipsync.core import Lookups, Settings, State, decide, failed

S = Settings()


def run(registered, found, state):
    return decide(registered, found, state, S)


def test_first_run_registers_what_is_not_registered_and_counts_nothing():
    out = run({"10.0.1.5"}, {"10.0.1.5", "10.0.2.5"}, State())
    assert out.ok and out.register == ("10.0.2.5",) and out.deregister == ()
    assert out.state.active == {"10.0.1.5", "10.0.2.5"} and out.state.pending == {}
    assert out.ip_count == 2


def test_new_ip_is_registered_at_once():
    state = State(frozenset({"10.0.1.5"}), {})
    out = run({"10.0.1.5"}, {"10.0.1.5", "10.0.1.9"}, state)
    assert out.register == ("10.0.1.9",)


def test_ip_missing_three_runs_is_deregistered():
    state = State(frozenset({"10.0.1.5", "10.0.1.6"}), {})
    registered = {"10.0.1.5", "10.0.1.6"}
    seen = []
    for _ in range(3):
        out = run(registered, {"10.0.1.5", "10.0.1.9"}, state)
        registered |= set(out.register)
        registered -= set(out.deregister)
        state = out.state
        seen.append((dict(out.state.pending), out.deregister))
    assert seen == [({"10.0.1.6": 1}, ()), ({"10.0.1.6": 2}, ()), ({}, ("10.0.1.6",))]
    assert registered == {"10.0.1.5", "10.0.1.9"}


def test_deregistration_follows_the_configured_count():
    settings = Settings.from_environment({"INVOCATIONS_BEFORE_DEREGISTRATION": "1"})
    out = decide({"10.0.1.5", "10.0.1.6"}, {"10.0.1.5"}, State(frozenset({"10.0.1.5", "10.0.1.6"})), settings)
    assert out.deregister == ("10.0.1.6",)


def test_reappearing_ip_leaves_the_pending_map():
    state = State(frozenset({"10.0.1.5"}), {"10.0.1.6": 2})
    out = run({"10.0.1.5", "10.0.1.6"}, {"10.0.1.5", "10.0.1.6"}, state)
    assert out.state.pending == {} and out.deregister == () and out.register == ("10.0.1.6",)
    assert any("is back" in line for line in out.log)


def test_zero_ips_found_changes_nothing():
    state = State(frozenset({"10.0.1.5"}), {"10.0.1.6": 2})
    out = run({"10.0.1.5", "10.0.1.6"}, set(), state)
    assert not out.ok and out.register == out.deregister == () and out.state == state
    assert out.ip_count is None and "refusing" in out.log[0]


def test_dns_timeout_logs_and_changes_nothing():
    state = State(frozenset({"10.0.1.5"}), {"10.0.1.6": 1})
    out = failed(state, "DNS query timed out after 2s")
    assert not out.ok and out.state == state and out.register == out.deregister == ()
    assert "timed out" in out.log[0]


def test_first_run_leaves_unfound_registered_targets_alone():
    out = run({"10.0.9.9"}, {"10.0.1.5"}, State())
    assert out.deregister == () and out.state.pending == {}


def test_lookups_stop_at_a_short_answer_or_the_limit():
    lookups = Lookups(S)
    assert not lookups.add(["10.0.1.5", "10.0.2.5"])
    assert lookups.done == 1
    full = [f"10.0.1.{i}" for i in range(8)]
    lookups = Lookups(Settings(max_lookup_per_invocation=3))
    assert lookups.add(full) and lookups.add(full[::-1]) and not lookups.add(full)
    assert lookups.done == 3 and len(lookups.found) == 8


def test_metric_flag_off_puts_no_count():
    settings = Settings.from_environment({"CW_METRIC_FLAG_IP_COUNT": "False"})
    assert decide(set(), {"10.0.1.5"}, State(), settings).ip_count is None


def test_state_round_trips():
    state = State(frozenset({"10.0.1.5"}), {"10.0.1.6": 2})
    assert State.from_dict(state.to_dict()) == state and State.from_dict(None) == State()
