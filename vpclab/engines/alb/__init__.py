"""The Application Load Balancer: one HAProxy per ALB node, configured from the plan (issue 16)."""
