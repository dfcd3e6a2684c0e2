"""Target health checks, as Elastic Load Balancing runs them.

One health checker serves every load balancer in a lab (gateway, network and
application). The core is sans-IO and takes `now` from the caller:

- `HealthCheckConfig`: a target group's health check settings, with AWS's
  defaults and ranges per load balancer type (defined in
  `vpclab.model.health_check`, re-exported by `state`).
- `state.TargetHealth`: one target's state machine (`initial`, `healthy`, `unhealthy`,
  `unused`, `draining`, `unavailable`) with AWS's reason codes, shown by
  `describe()` in the shape of DescribeTargetHealth's `TargetHealth`.
- `scheduler.Scheduler`: when each target's next probe is due.
- `match_http_code`: the `Matcher` `HttpCode` syntax (also from the model).

The asyncio shell is thin: `probe.probe()` sends one TCP/HTTP/HTTPS health check over
a connection opened by an injected `connect` (so the socket can live in a
network namespace), and `checker.HealthChecker` runs probes on schedule for many target
groups and reports state changes. A target group with proxy_protocol_v2.enabled
has its checks start with the PROXY v2 LOCAL header, as an NLB's do (§3.5).

References: /work/shared/reference/aws-behaviour.md §2.3, §3.6, §3.7, §4.4, and
the ELBv2 API reference for `TargetHealth`.
"""
