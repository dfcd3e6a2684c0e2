"""The model is the bottom layer: it imports nothing from plan, fabric, engines, daemon or cli.

The engines re-export the configuration they moved into the model, so their
public names keep working and name the same objects.

The package layout (issue 15, docs/architecture.md) is checked from the source tree
and its imports: layers import only downward, no import cycles, small modules and
classes, each layer's list of services, services that keep out of each other's
internals, and module paths named outside imports (`-m ...`, package data) that exist.
"""
from __future__ import annotations

import ast
import importlib
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

import vpclab.engines.appliance.core as appliance_core
import vpclab.engines.health.state as health
import vpclab.model.appliance as model_appliance
import vpclab.model.health_check as model_health_check

MODEL = Path(__file__).resolve().parents[2] / "vpclab" / "model"
UPPER_LAYERS = ("vpclab.plan", "vpclab.fabric", "vpclab.engines", "vpclab.daemon", "vpclab.cli")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 1:
            names.append("vpclab." + (node.module or ""))  # `from ..engines import x`
    return names


def test_model_imports_no_upper_layer():
    for path in sorted(MODEL.glob("*.py")):
        bad = [name for name in _imports(path) if name.startswith(UPPER_LAYERS)]
        assert not bad, f"{path.name} imports {bad}"


def test_health_engine_re_exports_the_model_config():
    assert health.HealthCheckConfig is model_health_check.HealthCheckConfig
    assert health.match_http_code is model_health_check.match_http_code
    assert health.parse_matcher is model_health_check.parse_matcher
    assert health.TRAFFIC_PORT == "traffic-port"


def test_appliance_core_re_exports_the_model_config():
    assert appliance_core.ApplianceConfig is model_appliance.ApplianceConfig
    assert appliance_core.parse_rules is model_appliance.parse_rules
    assert appliance_core.Rule is model_appliance.Rule
    assert issubclass(model_appliance.ApplianceConfigError, ValueError)


def test_appliance_config_error_keeps_the_old_message_and_names_the_field():
    try:
        model_appliance.ApplianceConfig.from_dict({"rules": [{"action": "block"}]})
    except model_appliance.ApplianceConfigError as e:
        assert str(e) == "appliance.rules[0].action: expected allow or deny, got 'block'"
        assert (e.where, e.reason) == ("appliance.rules[0].action", "expected allow or deny, got 'block'")
    else:
        raise AssertionError("not refused")


def test_lb_type_for_protocol():
    assert model_health_check.lb_type_for_protocol("geneve") == "gateway"
    assert model_health_check.lb_type_for_protocol("TCP_UDP") == "network"
    assert model_health_check.lb_type_for_protocol("HTTPS") == "application"


# --- the package layout (issue 15) -------------------------------------------------------
# Everything below is computed from the tree and its imports. What is declared by hand is
# here, once: the layers in order, and where each layer keeps its list of services.

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "vpclab"
LAYERS = ("model", "plan", "fabric", "engines", "daemon", "doctor", "cli")  # bottom to top
LEAVES = ("wording", "unixpath")  # utilities for every layer; they import nothing of vpclab
# Each layer organised by service keeps its list in its package (`vpclab/<layer>/__init__.py`,
# or a name the package makes reachable): names of its modules or packages, one per service.
# The model and the plan list AWS services (ec2, elbv2, ...); the engines list engines (gwlb, nlb, ...).
LISTS = {"model": "SERVICES", "plan": "SERVICES", "engines": "ENGINES"}
MAX_MODULE_LINES, MAX_CLASS_LINES = 600, 300
# Over the limits while the issue 15 helpers split them; this list only shrinks.
STILL_SPLITTING: dict[str, str] = {}  # path (or path::Class) -> who splits it; empty: every module is within the limits
HELPERS = {"model": "r1 (model)", "plan": "r2 (plan)", "engines": "r3 (engines)"}  # who adds each list


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name; a package is its __init__."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _edges(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for each vpclab import, lazy ones too."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.append((sub, None, node.lineno) if sub in MODULES else (base, alias.name, node.lineno))
    return [(name, taken, line) for name, taken, line in edges if name == "vpclab" or name.startswith("vpclab.")]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS + LEAVES else None


def _rank(module: str) -> int:
    """Leaves at the bottom, then the layers in order; vpclab itself and __main__ on top."""
    layer = _layer(module)
    if layer in LEAVES:
        return -1
    return LAYERS.index(layer) if layer else len(LAYERS)


def test_every_module_belongs_to_a_layer():
    strays = sorted({m.split(".")[1] for m in MODULES if m.count(".") and not _layer(m)} - {"__main__"})
    assert not strays, f"vpclab/{strays[0]} is in no layer: add it to LAYERS (in order) or LEAVES"


def test_layers_import_only_downward():
    wrong = []
    for module in MODULES:
        for name, _, line in _edges(module):
            target = name if name in MODULES else None
            if target is None:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {name}, which does not exist")
            elif _rank(target) > _rank(module) or (_layer(module) in LEAVES and target != module):
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}: "
                             f"{_layer(module)} may import only {_below(module)}")
    assert not wrong, "\n".join(wrong)


def _below(module: str) -> str:
    layer = _layer(module)
    if layer in LEAVES:
        return "nothing of vpclab"
    return ", ".join(LAYERS[:LAYERS.index(layer) + 1]) + " and " + ", ".join(LEAVES)


def test_no_import_cycles():
    graph = {m: {name for name, _, _ in _edges(m) if name in MODULES} - {m} for m in MODULES}
    cycles = []
    for start in MODULES:  # a cycle through `start` is a path back to it; tiny graph, plain DFS
        stack, seen = [(start, (start,))], set()
        while stack:
            module, path = stack.pop()
            for nxt in graph[module]:
                if nxt == start and start == min(path):  # each cycle once, from its first module
                    cycles.append(" -> ".join(path + (start,)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + (nxt,)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles, key=len)[:10])


def _sizes() -> dict[str, int]:
    """Lines of every module (`path`) and every class (`path::Class`) of the package."""
    sizes = {}
    for path in MODULES.values():
        text, where = path.read_text(), str(path.relative_to(ROOT))
        sizes[where] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                sizes[f"{where}::{node.name}"] = node.end_lineno - node.lineno + 1
    return sizes


def _limit(where: str) -> int:
    return MAX_CLASS_LINES if "::" in where else MAX_MODULE_LINES


def test_no_module_over_600_lines_and_no_class_over_300():
    over = [f"{where}: {n} lines, over {_limit(where)}" for where, n in _sizes().items()
            if n > _limit(where) and where not in STILL_SPLITTING]
    assert not over, "split by service or by concern:\n" + "\n".join(over)


def test_the_list_of_files_still_being_split_only_shrinks():
    sizes = _sizes()
    done = [f"{where} ({who}): {'gone' if where not in sizes else f'{sizes[where]} lines'}; remove it"
            for where, who in STILL_SPLITTING.items() if sizes.get(where, 0) <= _limit(where)]
    assert not done, "STILL_SPLITTING names what is already split:\n" + "\n".join(done)


def _listed(layer: str) -> list[str] | None:
    """A layer's list of services as names: entries may be names, the modules themselves, or
    objects with a `name`."""
    entries = getattr(importlib.import_module(f"vpclab.{layer}"), LISTS[layer], None)
    if entries is None:
        return None
    return [e if isinstance(e, str) else e.__name__.rpartition(".")[2] if isinstance(e, ModuleType) else e.name
            for e in entries]


def _needs_list(*layers: str):
    missing = [layer for layer in layers if _listed(layer) is None]
    return pytest.mark.xfail(bool(missing), strict=False, reason=(
        "waits for " + ", ".join(f"{HELPERS[m]} to add vpclab.{m}.{LISTS[m]}" for m in missing)))


@pytest.mark.parametrize("layer", [pytest.param(layer, marks=_needs_list(layer)) for layer in LISTS])
def test_each_layer_keeps_a_list_of_its_services(layer):
    services = _listed(layer)
    assert services is not None, f"vpclab.{layer} has no {LISTS[layer]}"
    assert services and len(set(services)) == len(services), f"vpclab.{layer}.{LISTS[layer]}: {services}"
    missing = [f"vpclab.{layer}.{LISTS[layer]} names {name!r}, but there is no vpclab/{layer}/{name}.py "
               f"nor vpclab/{layer}/{name}/" for name in services if f"vpclab.{layer}.{name}" not in MODULES]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("layer", [pytest.param(layer, marks=_needs_list(layer)) for layer in LISTS])
def test_services_never_import_each_others_internals(layer):
    """Within a layer, only what a service exposes is used by others: never a submodule of its
    package nor a `_private` name; what several services need lives in a shared module."""
    services = _listed(layer)
    assert services is not None, f"vpclab.{layer} has no {LISTS[layer]}"
    roots = {f"vpclab.{layer}.{name}" for name in services}

    def owner(module: str) -> str | None:
        return next((r for r in roots if module == r or module.startswith(r + ".")), None)

    wrong = []
    for module in (m for m in MODULES if m.startswith(f"vpclab.{layer}.")):
        mine = owner(module)
        private = {}  # alias -> service root, to catch `elbv2._helper`
        tree = ast.parse(MODULES[module].read_text())
        for name, taken, line in _edges(module):
            target = name if name in MODULES else None
            theirs = owner(target) if target else None
            if theirs is None or theirs == mine:
                continue
            where = f"{MODULES[module].relative_to(ROOT)}:{line}"
            if target != theirs:
                wrong.append(f"{where} imports {target}, inside {theirs}")
            elif taken and taken.startswith("_"):
                wrong.append(f"{where} takes {taken} from {theirs}")
            else:
                private.update(_aliases(tree, target, taken))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in private):
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{node.lineno} uses "
                             f"{private[node.value.id]}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def _aliases(tree: ast.AST, target: str, taken: str | None) -> dict[str, str]:
    """The local names a module binds to the service module `target`."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update({a.asname: target for a in node.names if a.name == target and a.asname})
        elif isinstance(node, ast.ImportFrom) and taken is None:
            names.update({a.asname or a.name: target for a in node.names
                          if f"{node.module}.{a.name}" == target})
    return names


@pytest.mark.parametrize("layers", [pytest.param(("model", "plan"), marks=_needs_list("model", "plan"))])
def test_the_layers_organised_by_aws_service_list_the_same_services(layers):
    """The model and the plan line up: each service has its module in both, in the same order."""
    lists = {layer: _listed(layer) for layer in layers}
    assert None not in lists.values(), f"a list is missing: {lists}"
    assert len({tuple(s) for s in lists.values()}) == 1, f"the lists differ: {lists}"


def _named_module_paths() -> list[tuple[str, str, bool]]:
    """(where, module, run with -m?) for each module path that code and docs name outside an
    import: `-m ...` in commands and argv lists, pyproject.toml's console scripts and package
    data (`package/file`)."""
    named = []
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py"),
             *(ROOT / "docs").rglob("*.md"), ROOT / "README.md", ROOT / "install.sh", ROOT / ".ci" / "run"]
    for path in (p for p in files if p.is_file()):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"""-m["',\s]+(vpclab(?:\.\w+)*)""", line):
                named.append((f"{path.relative_to(ROOT)}:{n}", match.group(1), True))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for script, target in project["project"].get("scripts", {}).items():
        named.append((f"pyproject.toml, script {script}", target.partition(":")[0], False))
    for package, files in project["tool"]["setuptools"].get("package-data", {}).items():
        named += [("pyproject.toml, package-data", f"{package}/{f}", False) for f in files]
    return named


def _runnable(path: Path) -> bool:
    """`python -m` runs a module with a __main__ block, or a package with a __main__.py."""
    if path.name == "__init__.py":
        return (path.parent / "__main__.py").exists()
    return "if __name__ == \"__main__\":" in path.read_text()


def test_module_paths_named_outside_imports_exist():
    """The daemon starts engines by module path (`python -m` and the path), and install.sh builds
    the GWLB fast path the same way: a module that moves must take every such path with it."""
    wrong = []
    for where, name, run in _named_module_paths():
        package, _, data = name.partition("/")
        if package not in MODULES:
            wrong.append(f"{where}: no module {package}")
        elif data and not (MODULES[package].parent / data).exists():
            wrong.append(f"{where}: no {data} beside package {package}")
        elif run and not _runnable(MODULES[package]):
            wrong.append(f"{where}: {name} does not run with -m")
    assert not wrong, "\n".join(wrong)
