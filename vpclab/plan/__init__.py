"""The plan layer: a pure compile from a `Lab` to a `Wiring` (compile.compile_lab).

SERVICES names its compile modules, one per AWS service; compile_lab calls them in the order
`vpclab plan` lists the wiring. common and wiring are what they share.
"""
SERVICES = ("ec2", "elbv2", "privatelink", "transit_gateway", "route53", "awslambda")
