"""The model is the bottom layer: it imports nothing from plan, fabric, engines, daemon or cli.

The engines re-export the configuration they moved into the model, so their
public names keep working and name the same objects.
"""
from __future__ import annotations

import ast
from pathlib import Path

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
