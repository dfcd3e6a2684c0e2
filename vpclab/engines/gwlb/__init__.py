"""The Gateway Load Balancer node: a sans-IO core (`core`) behind a thin I/O shell."""
from vpclab.engines.gwlb.core import (
    Decap, Drop, Encap, GwlbConfig, GwlbNode, Reset, Target, flow_key,
)

__all__ = ["Decap", "Drop", "Encap", "GwlbConfig", "GwlbNode", "Reset", "Target", "flow_key"]
