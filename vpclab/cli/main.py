"""vpclab: AWS VPC architectures on one Linux machine, with real packets."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vpclab.daemon import paths
from vpclab.cli.render import render_status, table
from vpclab.daemon.client import Lab, LabError
from vpclab.model.errors import LabFileError, printable
from vpclab.wording import counted

# The model and the plan are imported where a command reads a lab file: most
# commands (exec, capture, status...) only talk to a running lab and start faster without them.


def load_lab(path, name=None):
    from vpclab.model import load_lab as load
    return load(path, name)


def read_lab_file(path) -> str:
    from vpclab.model.labfile import read_lab_file as read
    return read(path)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _pick_lab(name: str | None) -> Lab:
    if name:
        return Lab(name)
    names = paths.lab_names()
    if len(names) == 1:
        return Lab(names[0])
    if not names:
        raise LabError("no lab is up (try `vpclab up FILE`)")
    raise LabError(f"several labs are up ({', '.join(names)}); say which with --lab NAME")


# --- commands -------------------------------------------------------------------


def cmd_validate(args) -> int:
    lab = load_lab(args.file)
    print(f"{printable(args.file)}: ok ({counted(len(lab.vpcs), 'VPC')}, {counted(len(lab.subnets), 'subnet')}, "
          f"{counted(len(lab.instances), 'instance')})")
    for note in lab.notes:  # valid, but not what the user may expect
        print(f"{printable(args.file)}: note: {note}")
    return 0


def cmd_plan(args) -> int:
    from vpclab.plan.compile import compile_lab
    sys.stdout.write(compile_lab(load_lab(args.file, args.name)).render())
    return 0


def cmd_up(args) -> int:
    started = time.monotonic()
    model = load_lab(args.file, args.name)  # refuse a bad file before anything is built
    lab = Lab(model.name)
    with lab.locked():
        if lab.daemon_pid() is not None:
            raise LabError(f"lab {lab.name} is already up (`vpclab down --lab {lab.name}` first)")
        restoring = lab.exists()
        text = read_lab_file(args.file)
        if restoring:
            model = lab.saved_lab(text)  # what comes back, live changes and all
            _say(f"lab {lab.name}: its daemon is gone; bringing it back from its state store")
        from vpclab.doctor.probes import refuse_if_lacking
        refuse_if_lacking(model)  # before anything of the lab exists: never a rollback for a missing feature
        if not restoring:
            lab.create(model.name, str(Path(args.file).resolve()), text)
        _say(f"lab {lab.name}: starting the sandbox")
        try:
            status = lab.start(lambda m: _say(f"lab {lab.name}: {m}"), model)
        except BaseException as exc:
            lab.stop()
            log = lab.dir / "daemon.log"
            if not restoring:
                log = lab.keep_failed_log() or log
                lab.remove()
            _say(f"lab {lab.name}: bring-up failed; rolled back")
            if isinstance(exc, Exception):
                _say_tail(lab.name, log)
            if isinstance(exc, LabError) and exc.code == "daemon-exited":
                raise LabError(f"{exc}; see {log}") from None
            raise
    _say(f"lab {lab.name}: up in {time.monotonic() - started:.2f}s")
    print(render_status(status))
    return 0


def cmd_doctor(args) -> int:
    from vpclab.doctor import features, probes
    results = probes.with_test_override(probes.probe())
    if args.json:
        print(json.dumps(features.to_json(results, probes.kernel(), os.getuid()), indent=2))
    else:
        print(features.render_table(results, probes.kernel()))
    lacking = features.missing_required(results)
    if lacking and not args.json:
        _say(f"doctor: {features.summary(lacking)}")
    return 1 if lacking else 0


def _say_tail(name: str, log: Path, lines: int = 10) -> None:
    """The last lines of a failed bring-up's daemon log: what went wrong, without opening it."""
    try:
        tail = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return
    if tail:
        _say(f"lab {name}: the last lines of {log}:\n" + "\n".join(f"  {line}" for line in tail))


def cmd_down(args) -> int:
    lab = _pick_lab(args.lab)
    with lab.locked():
        if not lab.exists():
            raise LabError(f"no lab named {lab.name}")
        lab.stop()
        lab.remove()
    _say(f"lab {lab.name}: down")
    return 0


def cmd_status(args) -> int:
    if not args.lab and len(paths.lab_names()) > 1 and not args.json:
        for name in paths.lab_names():
            print(f"{name}\t{'up' if Lab(name).daemon_pid() else 'stopped (vpclab up restores it)'}")
        return 0
    status = _pick_lab(args.lab).request({"op": "status"})
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


def cmd_exec(args) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise LabError("say what to run: vpclab exec NODE -- COMMAND...")
    argv = _pick_lab(args.lab).nsenter(args.node) + command
    os.execvp(argv[0], argv)


def cmd_capture(args) -> int:
    from vpclab.cli.capture import capture
    return capture(_pick_lab(args.lab), args)


def cmd_logs(args) -> int:
    lab = _pick_lab(args.lab)
    if args.node and args.node_option and args.node != args.node_option:
        raise LabError(f"two nodes given: {args.node} and --node {args.node_option}")
    node = args.node or args.node_option
    files = [lab.dir / "daemon.log"] if not node else [lab.dir / "logs" / f"{node}.log"]
    if node and not args.follow and not files[0].exists():
        lab.nsenter(node)  # refuses a node the lab does not have, naming those it has
        raise LabError(f"{node} has no output yet (only nodes that run a command, such as appliances, have one)")
    argv = ["tail", "-n", str(args.lines)] + (["-F"] if args.follow else []) + [str(f) for f in files]
    return subprocess.run(argv).returncode


def cmd_sg_change(args) -> int:
    params = {"group": args.group_id, "protocol": args.protocol, "port": args.port,
              "cidr": args.cidr, "source_group": args.source_group}
    _change(args, args.command_name, {k: v for k, v in params.items() if v is not None})
    return 0


def change_outcome(kind: str, result: dict) -> str:
    """What a live change did: applied as change N, or nothing (already so, as AWS allows)."""
    if result.get("no_op"):
        return f"{kind}: no-op, already in that state (nothing changed)"
    return f"{kind}: applied (change {result['seq']})"


def _change(args, kind: str, params: dict) -> dict:
    result = _pick_lab(args.lab).request({"op": "change", "kind": kind, "params": params})
    _say(change_outcome(kind, result))
    return result


def cmd_targets(args) -> int:
    rows = [["TARGET", "PORT", "STATE", "REASON", "DESCRIPTION"]]
    for d in _pick_lab(args.lab).request({"op": "targets", "target_group": args.target_group}):
        h = d["TargetHealth"]
        rows.append([d["Target"]["Id"], str(d["Target"].get("Port", "")), h["State"], h.get("Reason", "-"),
                     h.get("Description", "")])
    print(table(rows))
    return 0


def cmd_register(args) -> int:
    kind = "register-targets" if args.command_name == "register" else "deregister-targets"
    _change(args, kind, {"target_group": args.target_group, "targets": args.targets})
    return 0


def cmd_replace_nodes(args) -> int:
    _change(args, "replace-nodes", {"load_balancer": args.load_balancer})
    return 0


def cmd_scale_nodes(args) -> int:
    _change(args, "scale-nodes", {"load_balancer": args.load_balancer, "nodes_per_az": args.nodes_per_az})
    return 0


def cmd_invoke(args) -> int:
    """One run of a lab function now, as `aws lambda invoke` does; its log says what it did."""
    status = _pick_lab(args.lab).request({"op": "invoke", "function": args.function})
    last = status["last_run"]
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print("\n".join(last["log"]))
    return 0 if last["ok"] else 1


def _json_arg(text: str | None, option: str):
    """A --conditions/--actions value: JSON, in the lab file's (CloudFormation's) shape."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"{option} must be JSON (the lab file's shape), e.g. "
                       "'[{\"Type\": \"forward\", \"TargetGroupArn\": \"web\"}]': " + str(exc)) from None


def cmd_rule(args) -> int:
    """CreateRule, ModifyRule, DeleteRule, SetRulePriorities, ModifyListener (an ALB's, live)."""
    name = args.command_name
    if name == "create-rule":
        params = {"listener": args.listener, "priority": args.priority, "name": args.name,
                  "conditions": _json_arg(args.conditions, "--conditions"),
                  "actions": _json_arg(args.actions, "--actions")}
    elif name == "modify-rule":
        params = {"rule": args.rule, "conditions": _json_arg(args.conditions, "--conditions"),
                  "actions": _json_arg(args.actions, "--actions")}
    elif name == "delete-rule":
        params = {"rule": args.rule}
    elif name == "set-rule-priorities":
        pairs = [p.partition("=") for p in args.priorities]
        if any(not sep for _, sep, _ in pairs):
            raise LabError("priorities are RULE=PRIORITY")
        params = {"priorities": {rule: priority for rule, _, priority in pairs}}
    else:
        params = {"listener": args.listener, "default_actions": _json_arg(args.default_actions, "--default-actions")}
    _change(args, name, params)
    return 0


def cmd_endpoint(args) -> int:
    _change(args, f"{args.action}-vpc-endpoint-connections", {"endpoint": args.endpoint})
    return 0


def cmd_modify(args) -> int:
    attributes = {}
    for pair in args.attributes:
        key, sep, value = pair.partition("=")
        if not sep:
            raise LabError(f"attributes are KEY=VALUE, got {pair!r}")
        attributes[key] = value
    _change(args, "modify-attributes", {"resource": args.resource, "attributes": attributes})
    return 0


def cmd_routes(args) -> int:
    """search-transit-gateway-routes: a transit gateway route table's effective routes."""
    status = _pick_lab(args.lab).request({"op": "status"})
    tables = [t for tgw in status["transit_gateways"] for t in tgw["route_tables"]]
    found = next((t for t in tables if args.route_table in (t["name"], t["id"])), None)
    if found is None:
        known = ", ".join(t["name"] for t in tables) or "none"
        raise LabError(f"InvalidRouteTableID.NotFound: no transit gateway route table {args.route_table!r} "
                       f"(the lab has: {known})")
    routes = found["routes"]
    if args.json:
        # the lab holds every route at once: nothing is left for a next page
        print(json.dumps({"Routes": routes, "AdditionalRoutesAvailable": False}, indent=2))
        return 0
    rows = [["DESTINATION", "ATTACHMENT", "RESOURCE", "TYPE", "STATE"]]
    for r in routes:
        attached = (r.get("TransitGatewayAttachments") or [{}])[0]
        rows.append([r["DestinationCidrBlock"], attached.get("TransitGatewayAttachmentId", "-"),
                     attached.get("ResourceId", "-"), r["Type"], r["State"]])
    print(table(rows))
    return 0


def cmd_tgw_change(args) -> int:
    """The transit gateway's live changes, named as the AWS CLI names them."""
    name = args.command_name
    if name in ("create-transit-gateway-route", "delete-transit-gateway-route"):
        params = {"route_table": args.route_table, "cidr": args.destination_cidr_block}
        if name.startswith("create"):
            if bool(args.blackhole) == bool(args.transit_gateway_attachment_id):
                raise LabError("give --transit-gateway-attachment-id or --blackhole")
            params.update(attachment=args.transit_gateway_attachment_id, blackhole=args.blackhole)
    elif name.endswith("propagation"):
        params = {"route_table": args.route_table, "attachment": args.transit_gateway_attachment_id}
    else:
        key, sep, value = args.options.partition("=")
        if key != "ApplianceModeSupport" or not sep:
            raise LabError("--options takes ApplianceModeSupport=enable or ApplianceModeSupport=disable")
        params = {"attachment": args.attachment, "appliance_mode_support": value}
    _change(args, name, params)
    return 0


def cmd_appliance(args) -> int:
    from vpclab.engines.appliance.process import main as appliance_main
    return appliance_main(args.appliance_args)


def cmd_demo(args) -> int:
    from vpclab.cli.demo import run_demo
    return run_demo(args.name)


# --- the parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpclab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(name: str, fn, help: str, lab_option: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn, command_name=name)
        if lab_option:
            p.add_argument("--lab", help="the lab to act on (default: the only one that is up)")
        return p

    p = command("validate", cmd_validate, "check a lab file; needs no privileges", lab_option=False)
    p.add_argument("file")
    p = command("plan", cmd_plan, "print the Linux wiring a lab file compiles to; needs no privileges",
                lab_option=False)
    p.add_argument("file")
    p.add_argument("--name")
    p = command("doctor", cmd_doctor, "probe, in a throwaway sandbox, every kernel and host feature vpclab uses; "
                "exits 1 when a required one is missing", lab_option=False)
    p.add_argument("--json", action="store_true", help="the results as JSON")
    p = command("up", cmd_up, "bring a lab up (or back, after a crash)", lab_option=False)
    p.add_argument("file")
    p.add_argument("--name", help="the lab's name (default: lab.name in the file, else the file's stem)")
    command("down", cmd_down, "tear a lab down and remove its state")
    p = command("status", cmd_status, "what a lab holds")
    p.add_argument("--json", action="store_true", help="the stable JSON schema (see README)")
    p = command("exec", cmd_exec, "run a command inside an instance, internet host or other node")
    p.add_argument("node")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = command("capture", cmd_capture, "capture packets on a node's interface (pcap), until Ctrl-C, "
                "-c COUNT packets or --seconds N")
    p.add_argument("node")
    p.add_argument("filter", nargs="*", help="a capture filter, e.g. 'tcp port 80'")
    p.add_argument("-i", "--interface", default="eth0")
    p.add_argument("-w", "--write", help="write a pcap file instead of printing")
    p.add_argument("-c", "--count", type=int, help="stop after this many packets")
    p.add_argument("--seconds", "-d", "--duration", dest="seconds", type=int, help="stop after this many seconds")
    p = command("logs", cmd_logs, "the lab daemon's log, or a node's command output")
    p.add_argument("node", nargs="?", help="a node whose command output to show (or --node)")
    p.add_argument("--node", dest="node_option", metavar="NODE", help=argparse.SUPPRESS)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=int, default=50)
    for name in ("authorize-security-group-ingress", "revoke-security-group-ingress",
                 "authorize-security-group-egress", "revoke-security-group-egress"):
        p = command(name, cmd_sg_change, f"{name.replace('-', ' ')} (live, as the AWS CLI does)")
        p.add_argument("group_id", metavar="GROUP", help="security group name or sg- id")
        p.add_argument("--protocol", required=True, help="tcp, udp, icmp, all (-1) or a number")
        p.add_argument("--port", help="a port or a range, e.g. 80 or 1024-65535")
        peer = p.add_mutually_exclusive_group(required=True)
        peer.add_argument("--cidr")
        peer.add_argument("--source-group", help="another group of the same VPC")
    p = command("targets", cmd_targets, "target health, with AWS's states and reason codes")
    p.add_argument("target_group")
    for name, verb in (("register", "register targets with"), ("deregister", "deregister targets from")):
        p = command(name, cmd_register, f"{verb} a target group (live)")
        p.add_argument("target_group")
        p.add_argument("targets", nargs="+", help="instance names or ids, or IPs for ip target groups")
    p = command("replace-nodes", cmd_replace_nodes, "give an internal ALB's nodes new IPs, as AWS does when it "
                "scales or replaces them (live); DNS follows, the old IPs serve on until the next replacement")
    p.add_argument("load_balancer")
    p = command("scale-nodes", cmd_scale_nodes, "scale an internal ALB to N nodes per AZ, as AWS does under load "
                "(live); DNS gives every node's IP, removed ones serve on, out of DNS, until the next change")
    p.add_argument("load_balancer")
    p.add_argument("nodes_per_az", type=int)
    p = command("invoke", cmd_invoke, "run a lab function once now (Lambda Invoke); exits 1 if the run failed")
    p.add_argument("function")
    p.add_argument("--json", action="store_true", help="the function's status after the run")
    p = command("create-rule", cmd_rule, "add a rule to an ALB listener (live, CreateRule)")
    p.add_argument("listener")
    p.add_argument("--priority", required=True)
    p.add_argument("--conditions", required=True, help="JSON, e.g. '[{\"Field\": \"path-pattern\", "
                   "\"PathPatternConfig\": {\"Values\": [\"/api/*\"]}}]'")
    p.add_argument("--actions", required=True, help="JSON, e.g. '[{\"Type\": \"forward\", \"TargetGroupArn\": \"web\"}]'")
    p.add_argument("--name", help="the rule's name in the lab (default: LISTENER-PRIORITY)")
    p = command("modify-rule", cmd_rule, "change a rule's conditions or actions (live, ModifyRule)")
    p.add_argument("rule", help="the rule's name or ARN (a default rule: its ARN)")
    p.add_argument("--conditions")
    p.add_argument("--actions")
    p = command("delete-rule", cmd_rule, "delete an ALB listener rule (live, DeleteRule)")
    p.add_argument("rule")
    p = command("set-rule-priorities", cmd_rule, "move rules to new priorities at once (live, SetRulePriorities)")
    p.add_argument("priorities", nargs="+", metavar="RULE=PRIORITY")
    p = command("modify-listener", cmd_rule, "change an ALB listener's default actions (live, ModifyListener)")
    p.add_argument("listener")
    p.add_argument("--default-actions", required=True, help="JSON, the lab file's DefaultActions shape")
    p = command("endpoint", cmd_endpoint, "accept or reject a VPC endpoint connection (as the service provider)")
    p.add_argument("action", choices=["accept", "reject"])
    p.add_argument("endpoint", help="the endpoint's name or vpce- id")
    p = command("modify", cmd_modify, "modify attributes of a load balancer, target group or listener (live)")
    p.add_argument("resource")
    p.add_argument("attributes", nargs="+", metavar="KEY=VALUE")
    p = command("routes", cmd_routes, "a transit gateway route table's routes, propagated ones included "
                "(as aws ec2 search-transit-gateway-routes shows them)")
    p.add_argument("route_table", help="the route table's name or tgw-rtb- id")
    p.add_argument("--json", action="store_true", help="AWS's JSON shape")
    for name, verb in (("create-transit-gateway-route", "add a static or blackhole route to"),
                       ("delete-transit-gateway-route", "delete a static route from")):
        p = command(name, cmd_tgw_change, f"{verb} a transit gateway route table (live)")
        p.add_argument("route_table", help="the route table's name or tgw-rtb- id")
        p.add_argument("--destination-cidr-block", required=True)
        if name.startswith("create"):
            p.add_argument("--transit-gateway-attachment-id", help="the attachment's name or tgw-attach- id")
            p.add_argument("--blackhole", action="store_true")
    for name, verb in (("enable-transit-gateway-route-table-propagation", "propagate an attachment's VPC CIDR to"),
                       ("disable-transit-gateway-route-table-propagation", "stop propagating an attachment to")):
        p = command(name, cmd_tgw_change, f"{verb} a transit gateway route table (live)")
        p.add_argument("route_table", help="the route table's name or tgw-rtb- id")
        p.add_argument("--transit-gateway-attachment-id", required=True)
    p = command("modify-transit-gateway-vpc-attachment", cmd_tgw_change,
                "turn a VPC attachment's appliance mode on or off (live)")
    p.add_argument("attachment", help="the attachment's name or tgw-attach- id")
    p.add_argument("--options", required=True, metavar="ApplianceModeSupport=enable|disable")
    p = command("appliance", cmd_appliance, "run the reference GENEVE appliance (what appliance instances run)",
                lab_option=False)
    p.add_argument("appliance_args", nargs=argparse.REMAINDER, help="see `vpclab appliance -- --help`")
    p = command("demo", cmd_demo, "bring up the richest example lab, send real traffic through it, tear it down",
                lab_option=False)
    p.add_argument("--name",
                   help="the demo lab's name (default: vpclab-demo); a lab the demo did not start is never removed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except LabFileError as exc:
        _say(f"error: {printable(str(exc))}")
        return 2
    except LabError as exc:
        _say("error: " + printable(str(exc), keep="\n\t"))  # a daemon log's lines keep their breaks
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
