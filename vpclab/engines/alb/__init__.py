"""The Application Load Balancer node: HAProxy, configured by `config` (haproxy.cfg from the
plan's node config, sans-IO) and changed live by `runtime` (the runtime API: pure command
builders and a small socket client). Python never sits on the request path.
"""
