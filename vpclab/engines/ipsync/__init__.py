"""The IP-sync function of the static-IP-for-ALB pattern (reference §5.1): core.py decides, the
daemon (daemon/ipsync.py) resolves, stores state and registers through the change API."""
