"""ALB routing algorithms (reference §4.2) with real requests from a client in the VPC:
`least_outstanding_requests` sends fewer requests to a slow target, and
`slow_start.duration_seconds` ramps a newly registered target up (fewer requests early), but
not a target that turns healthy while every other healthy target is itself ramping (AWS's rule,
which HAProxy's own `slowstart` does not follow)."""
from __future__ import annotations

import time

import pytest

from alb_harness import module_lab
from conftest import target_states, wait_for

pytestmark = pytest.mark.lab
NAME = "alb-algorithms"
SLOW_START = 30  # AWS's least

# A target whose every page takes 1 s (threads: slow, not serial), naming itself "slow".
SLOW_SERVER = (
    "import http.server as h, time\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        time.sleep(1)\n"
    "        body = b'slow'\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "h.ThreadingHTTPServer(('', 80), H).serve_forever()\n"
)

# An application on port 82 that names its instance and sets its own cookie on /login.
COOKIE_SERVER = (
    "import http.server as h, sys\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = sys.argv[1].encode()\n"
    "        self.send_response(200)\n"
    "        if self.path == '/login':\n"
    "            self.send_header('Set-Cookie', 'SESSION=app-' + sys.argv[1] + '; Path=/')\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "h.ThreadingHTTPServer(('', 82), H).serve_forever()\n"
)

TEMPLATE = """
lab: {region: us-east-1, account: "111122223333"}
vpcs:
  main: {CidrBlock: 10.0.0.0/16}
subnets:
  nodes-a: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.1.0/24}
  nodes-b: {VpcId: main, AvailabilityZone: b, CidrBlock: 10.0.2.0/24}
  private-a: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.11.0/24}
  clients: {VpcId: main, AvailabilityZone: a, CidrBlock: 10.0.21.0/24}
security_groups:
  open:
    VpcId: main
    SecurityGroupIngress: [{IpProtocol: tcp, FromPort: 80, ToPort: 83, CidrIp: 10.0.0.0/16}]
instances:
  fast:
    SubnetId: private-a
    PrivateIpAddress: 10.0.11.10
    SecurityGroupIds: [open]
    Run: ["python3 -c \\"@APP_SERVER@\\" fast"]
  late:
    SubnetId: private-a
    PrivateIpAddress: 10.0.11.12
    SecurityGroupIds: [open]
    Run: ["python3 -c \\"@APP_SERVER@\\" late"]
  slow:
    SubnetId: private-a
    PrivateIpAddress: 10.0.11.11
    SecurityGroupIds: [open]
    DefaultServices: false
    Run: ["python3 -c \\"@SLOW_SERVER@\\""]
  client: {SubnetId: clients, PrivateIpAddress: 10.0.21.10, DefaultServices: false}
load_balancers:
  alb:
    Type: application
    Scheme: internal
    Subnets: [nodes-a, nodes-b]
    SecurityGroups: [open]
target_groups:
  lor:
    Protocol: HTTP
    Port: 80
    VpcId: main
    TargetType: instance
    HealthCheckIntervalSeconds: 5
    HealthyThresholdCount: 2
    TargetGroupAttributes: {load_balancing.algorithm.type: least_outstanding_requests}
    Targets: [fast, slow]
  ramp: &ramp
    Protocol: HTTP
    Port: 80
    VpcId: main
    TargetType: instance
    HealthCheckIntervalSeconds: 5
    HealthyThresholdCount: 2
    TargetGroupAttributes: {slow_start.duration_seconds: 30}  # SLOW_START
    Targets: [fast]
  steady: *ramp  # the same group again: its own ramps
  app:
    Protocol: HTTP
    Port: 82
    VpcId: main
    TargetType: instance
    HealthCheckIntervalSeconds: 5
    HealthyThresholdCount: 2
    TargetGroupAttributes:
      stickiness.enabled: true
      stickiness.type: app_cookie
      stickiness.app_cookie.cookie_name: SESSION
    Targets: [fast, late]
listeners:
  http-lor: {LoadBalancerArn: alb, Protocol: HTTP, Port: 80, DefaultActions: [{Type: forward, TargetGroupArn: lor}]}
  http-ramp: {LoadBalancerArn: alb, Protocol: HTTP, Port: 81, DefaultActions: [{Type: forward, TargetGroupArn: ramp}]}
  http-app: {LoadBalancerArn: alb, Protocol: HTTP, Port: 82, DefaultActions: [{Type: forward, TargetGroupArn: app}]}
  http-steady: {LoadBalancerArn: alb, Protocol: HTTP, Port: 83, DefaultActions: [{Type: forward, TargetGroupArn: steady}]}
"""


def _inline(code: str) -> str:
    """Python source as one YAML double-quoted line (its newlines as \\n)."""
    return code.encode("unicode_escape").decode()


LAB = TEMPLATE.replace("@APP_SERVER@", _inline(COOKIE_SERVER)).replace("@SLOW_SERVER@", _inline(SLOW_SERVER))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with module_lab(tmp_path_factory, LAB, NAME) as lab:
        wait_for(lambda: target_states(lab, "lor") == {"fast": "healthy", "slow": "healthy"}, 90,
                 "both targets of lor healthy")
        wait_for(lambda: target_states(lab, "ramp") == {"fast": "healthy"}, 60, "fast healthy in ramp")
        wait_for(lambda: target_states(lab, "steady") == {"fast": "healthy"}, 60, "fast healthy in steady")
        wait_for(lambda: target_states(lab, "app") == {"fast": "healthy", "late": "healthy"}, 60,
                 "both targets of app healthy")
        yield lab


def node_ip(lab) -> str:
    lb = next(b for b in lab.status()["load_balancers"] if b["name"] == "alb")
    return next(n["private_ip"] for n in lb["nodes"] if n["subnet"] == "nodes-a")


def served(lab, port: int, requests: int, parallel: int) -> list[str]:
    """Who answered each of `requests` GETs sent `parallel` at a time: "slow", or the test
    page's first word (the instance's name)."""
    url = f"http://{node_ip(lab)}:{port}/"
    # a request that fails shows as `curl-exit-<code>` (no answer at all), never as nothing
    out = lab.sh("client", f"seq {requests} | xargs -P {parallel} -I@ sh -c "
                           f"'r=$(curl -s --max-time 20 {url}) && echo \"$r\" | head -n 1 "
                           f"|| echo curl-exit-$?; echo'", timeout=120).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_least_outstanding_requests_sends_fewer_requests_to_a_slow_target(lab):
    got = served(lab, 80, 60, 12)
    assert len(got) == 60, got
    # round robin would give the slow target half; with its requests outstanding for 1 s, the
    # fast one (none outstanding) takes nearly all
    assert got.count("slow") <= 10 and got.count("fast") >= 50, got


def test_slow_start_ramps_a_newly_registered_target(lab):
    lab.vpclab("register", "--lab", lab.name, "ramp", "late")
    try:
        wait_for(lambda: target_states(lab, "ramp").get("late") == "healthy", 60, "late healthy")
        registered = time.monotonic()
        early = served(lab, 81, 40, 1)
        assert time.monotonic() - registered < SLOW_START / 2, "too slow to see the ramp's start"
        wait_for(lambda: time.monotonic() - registered > SLOW_START + 2, SLOW_START + 10, "the ramp's end",
                 interval=1)
        late = served(lab, 81, 40, 1)
        # early in the ramp the new target takes a small share; once over, round robin's half
        assert early.count("late") <= 12, early
        assert 14 <= late.count("late") <= 26, late
    finally:
        lab.vpclab("deregister", "--lab", lab.name, "ramp", "late", check=False)


def test_a_target_back_while_every_other_is_ramping_takes_its_full_share_at_once(lab):
    # late ramps beside fast; fast leaves and comes back while late, the only healthy target,
    # still ramps: with no healthy target out of slow start, fast does not enter it (AWS)
    lab.vpclab("register", "--lab", lab.name, "steady", "late")
    try:
        wait_for(lambda: target_states(lab, "steady").get("late") == "healthy", 60, "late healthy")
        late_ramp = time.monotonic()
        lab.vpclab("deregister", "--lab", lab.name, "steady", "fast")
        wait_for(lambda: target_states(lab, "steady").get("fast") != "healthy", 30, "fast deregistered")
        lab.vpclab("register", "--lab", lab.name, "steady", "fast")
        wait_for(lambda: target_states(lab, "steady").get("fast") == "healthy", 60, "fast healthy again")
        got = served(lab, 83, 40, 1)
        assert time.monotonic() - late_ramp < SLOW_START / 2, "too slow to see late's ramp"
        # late, under half way up its ramp, weighs under half of fast's full weight: fast takes
        # two thirds or more. HAProxy's `slowstart` would ramp fast from nothing: late would take most
        assert len(got) == 40 and got.count("fast") >= 24, got
    finally:
        lab.vpclab("register", "--lab", lab.name, "steady", "fast", check=False)
        lab.vpclab("deregister", "--lab", lab.name, "steady", "late", check=False)


def get(lab, path: str, jar: str | None = None, cookie: str | None = None) -> tuple[str, list[str]]:
    """From the client to the app listener: (the body, the Set-Cookie values)."""
    args = f"-b {jar} -c {jar}" if jar else ""
    if cookie:
        args += f" -H 'Cookie: {cookie}'"
    out = lab.sh("client", f"curl -si --max-time 5 {args} http://{node_ip(lab)}:82{path}").stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    cookies = [line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("set-cookie:")]
    return body.strip(), cookies


def test_app_cookie_stickiness_issues_awsalbapp_and_leaves_the_apps_cookie_alone(lab):
    # no application cookie set: no stickiness cookie, requests spread
    answers = [get(lab, "/") for _ in range(6)]
    assert {body for body, _ in answers} == {"fast", "late"}
    assert not any(cookies for _, cookies in answers)
    jar = "/tmp/alb-app-cookies"
    lab.sh("client", f"rm -f {jar}")
    pinned, cookies = get(lab, "/login", jar)
    assert f"SESSION=app-{pinned}; Path=/" in cookies  # as the application set it
    awsalbapp = [c for c in cookies if c.startswith("AWSALBAPP-0=")]
    assert len(awsalbapp) == 1 and "Expires=" in awsalbapp[0], cookies
    assert {get(lab, "/", jar)[0] for _ in range(8)} == {pinned}
    # the application's cookie alone pins nothing: ALB routes on AWSALBAPP-0
    assert {get(lab, "/", cookie=f"SESSION=app-{pinned}")[0] for _ in range(6)} == {"fast", "late"}
