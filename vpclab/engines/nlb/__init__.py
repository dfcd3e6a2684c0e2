"""The Network Load Balancer node: its nftables ruleset (`ruleset`) and the PROXY protocol v2 relay (`pp2_relay`)."""
