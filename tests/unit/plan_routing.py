"""A tiny evaluator of Linux IPv4 policy routing, for the plan's `ip -batch` lines.

It reads the `addr add`, `rule add` and `route add` lines that
vpclab.plan emits and answers what the kernel would do with a packet
that enters on interface `iif` for destination `dst`:

1. an address the namespace owns is delivered locally (this stands in for the
   local table at preference 0; broadcast addresses are not modelled);
2. then the rules, lowest preference first, equal preferences in the order they
   were added; a rule matches when it names no `iif` or names the packet's;
3. `lookup T`: the longest prefix in table T that holds `dst`. A unicast route
   forwards, a `blackhole` route drops, and a `throw` route (like no match at
   all) goes on with the next rule. A throw never falls back to a shorter
   prefix in the same table;
4. a `blackhole` rule drops;
5. after the namespace's rules come the kernel's own `lookup main` (32766) and
   `lookup default` (32767); main holds the prefix route of every address
   shorter than /32, as the kernel adds it;
6. when no rule decides, the kernel answers ICMP "network unreachable".

Lines it does not understand are an error, never skipped, except the few that
do not route (`link set`, `ntable change`). Adding the same route or rule twice
is an error too, as `ip -batch` would stop there with "File exists".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

MAIN, DEFAULT = 254, 253
TABLE_NAMES = {"main": MAIN, "default": DEFAULT}
NOT_ROUTING = ("link set ", "ntable change ")


@dataclass(frozen=True)
class Route:
    dest: IPv4Network
    kind: str = "unicast"  # unicast, throw or blackhole
    via: IPv4Address | None = None
    dev: str | None = None


@dataclass(frozen=True)
class Rule:
    pref: int
    action: str  # lookup or blackhole
    table: int | None = None
    iif: str | None = None
    to: IPv4Network | None = None  # the rule's destination selector
    fwmark: int | None = None  # the packet mark the rule selects (replies to an NLB node)


@dataclass(frozen=True)
class Decision:
    action: str  # local, forward, drop or unreachable
    dev: str | None = None
    via: IPv4Address | None = None
    pref: int | None = None  # the rule that decided
    table: int | None = None  # the table that decided, if a route did


@dataclass
class PolicyRouter:
    local: set[IPv4Address] = field(default_factory=set)
    rules: list[Rule] = field(default_factory=list)
    tables: dict[int, dict[IPv4Network, Route]] = field(default_factory=dict)

    @classmethod
    def from_batch(cls, lines) -> "PolicyRouter":
        router = cls()
        for line in lines:
            router.apply(line)
        return router

    def apply(self, line: str) -> None:
        words = line.split()
        if line.startswith(NOT_ROUTING):
            return
        if words[:2] == ["addr", "add"]:
            self._addr(words[2:])
        elif words[:2] == ["rule", "add"]:
            self._rule(words[2:], line)
        elif words[:2] == ["route", "add"]:
            self._route(words[2:], line)
        else:
            raise ValueError(f"not understood: {line!r}")

    def _addr(self, words: list[str]) -> None:
        if len(words) != 3 or words[1] != "dev":
            raise ValueError(f"not understood: addr add {' '.join(words)}")
        network = IPv4Network(words[0], strict=False)
        self.local.add(IPv4Address(words[0].split("/")[0]))
        if network.prefixlen < 32:  # the kernel's prefix route, in main, scope link
            self.tables.setdefault(MAIN, {}).setdefault(network, Route(network, dev=words[2]))

    def _rule(self, words: list[str], line: str) -> None:
        fields: dict[str, str] = {}
        action = None
        it = iter(words)
        for word in it:
            if word in ("pref", "iif", "lookup", "to", "fwmark"):
                fields[word] = next(it)
            elif word == "blackhole":
                action = "blackhole"
            else:
                raise ValueError(f"not understood: {line!r}")
        if "lookup" in fields:
            if action:
                raise ValueError(f"two actions: {line!r}")
            action = "lookup"
        if action is None or "pref" not in fields:
            raise ValueError(f"a rule needs pref and an action: {line!r}")
        table = fields.get("lookup")
        rule = Rule(int(fields["pref"]), action, TABLE_NAMES.get(table) or (int(table) if table else None),
                    fields.get("iif"), IPv4Network(fields["to"]) if "to" in fields else None,
                    int(fields["fwmark"], 0) if "fwmark" in fields else None)
        if rule in self.rules:
            raise ValueError(f"File exists: {line!r}")
        self.rules.append(rule)

    def _route(self, words: list[str], line: str) -> None:
        kind = "unicast"
        if words and words[0] in ("throw", "blackhole", "unicast"):
            kind, words = words[0], words[1:]
        if not words:
            raise ValueError(f"no destination: {line!r}")
        dest = IPv4Network("0.0.0.0/0" if words[0] == "default" else words[0])  # strict: a host part is an error
        fields: dict[str, str] = {}
        it = iter(words[1:])
        for word in it:
            if word in ("via", "dev", "table"):
                fields[word] = next(it)
            elif word == "onlink":
                pass  # the gateway is on the link whatever its address: nothing to evaluate
            else:
                raise ValueError(f"not understood: {line!r}")
        if kind == "unicast" and "dev" not in fields:
            raise ValueError(f"a unicast route needs a device here: {line!r}")
        if kind != "unicast" and ("via" in fields or "dev" in fields):
            raise ValueError(f"a {kind} route has no next hop: {line!r}")
        table_word = fields.get("table", "main")
        table = TABLE_NAMES.get(table_word) or int(table_word)
        routes = self.tables.setdefault(table, {})
        if dest in routes:
            raise ValueError(f"File exists: {line!r}")
        via = IPv4Address(fields["via"]) if "via" in fields else None
        routes[dest] = Route(dest, kind, via, fields.get("dev"))

    def ordered_rules(self) -> list[Rule]:
        kernel = [Rule(32766, "lookup", MAIN), Rule(32767, "lookup", DEFAULT)]
        return sorted(self.rules, key=lambda r: r.pref) + kernel  # sorted() is stable

    def lookup(self, table: int, dst: IPv4Address) -> Route | None:
        """Longest prefix match in one table."""
        matches = [r for r in self.tables.get(table, {}).values() if dst in r.dest]
        return max(matches, key=lambda r: r.dest.prefixlen, default=None)

    def route(self, iif: str, dst: str | IPv4Address, mark: int = 0) -> Decision:
        dst = IPv4Address(dst)
        if dst in self.local:
            return Decision("local", pref=0)
        for rule in self.ordered_rules():
            if rule.iif is not None and rule.iif != iif:
                continue
            if rule.fwmark is not None and rule.fwmark != mark:
                continue
            if rule.to is not None and dst not in rule.to:
                continue
            if rule.action == "blackhole":
                return Decision("drop", pref=rule.pref)
            route = self.lookup(rule.table, dst)
            if route is None or route.kind == "throw":
                continue
            if route.kind == "blackhole":
                return Decision("drop", pref=rule.pref, table=rule.table)
            return Decision("forward", route.dev, route.via, rule.pref, rule.table)
        return Decision("unreachable")


# --- the compiled lab: which namespace a router hands a packet to -----------


def router_ns(wiring, vpc: str):
    return wiring.namespace(f"router:{vpc}")


def router_of(wiring, vpc: str) -> PolicyRouter:
    return PolicyRouter.from_batch(router_ns(wiring, vpc).ip_batch)


def peer(wiring, ns: str, ifname: str) -> str:
    """The namespace at the other end of `ns`'s interface `ifname`."""
    ends = [(l.b_ns if (l.a_ns, l.a_ifname) == (ns, ifname) else l.a_ns) for l in wiring.links
            if (l.a_ns, l.a_ifname) == (ns, ifname) or (l.b_ns, l.b_ifname) == (ns, ifname)]
    assert len(ends) == 1, f"{ns}:{ifname} is the end of {len(ends)} links"
    return ends[0]


def router_side(wiring, ns: str, ifname: str = "eth0") -> tuple[str, str]:
    """(router namespace, router's interface) of the ENI veth from `ns`'s `ifname` into its VPC router."""
    ends = [(l.b_ns, l.b_ifname) for l in wiring.links
            if (l.a_ns, l.a_ifname) == (ns, ifname) and l.b_ns.startswith("router:")]
    assert len(ends) == 1, f"{ns} has {len(ends)} links into a router"
    return ends[0]


def where(wiring, src_ns: str, dst, *, vpc: str | None = None) -> str:
    """Where the VPC router sends a packet from `src_ns` (an ENI's namespace, or
    with `vpc` given: the name of a router interface such as "igw") to `dst`:
    the namespace it is handed to, "local", "drop" or "unreachable"."""
    if vpc is None:
        rns, iif = router_side(wiring, src_ns)
    else:
        rns, iif = f"router:{vpc}", src_ns
    decision = PolicyRouter.from_batch(wiring.namespace(rns).ip_batch).route(iif, dst)
    if decision.action != "forward":
        return decision.action
    return peer(wiring, rns, decision.dev)
