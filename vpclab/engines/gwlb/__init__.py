"""The Gateway Load Balancer node: a sans-IO core (`core`) behind a thin I/O shell."""
from vpclab.engines.gwlb.config import GwlbConfig
from vpclab.engines.gwlb.core import Decap, Drop, Encap, GwlbNode, Reset, flow_key
from vpclab.engines.gwlb.targets import Target

__all__ = ["Decap", "Drop", "Encap", "GwlbConfig", "GwlbNode", "Reset", "Target", "flow_key"]
