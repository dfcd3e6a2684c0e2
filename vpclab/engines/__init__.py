"""The data plane: sans-IO engine cores and the thin I/O shells that run them.

ENGINES names one package per engine (the daemon runs them); `io` is what they share
(event loop, batched sockets, control sockets, GENEVE and Proxy Protocol codecs), and
`services` the test services instances and internet hosts run.
"""
ENGINES = ("gwlb", "nlb", "alb", "appliance", "health", "dns", "ipsync")
