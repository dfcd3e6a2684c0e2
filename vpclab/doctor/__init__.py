"""`vpclab doctor`: which kernel and host features vpclab relies on are here.

- `features`: the pure core: the feature table (what stops working without each, how
  to get it), which features a ruleset uses, the verdict, its table and JSON, the cache.
- `needs`: which features a lab file uses, from its compiled plan (pure).
- `probes`: the I/O: each feature tried for real, in a throwaway sandbox (user, mount,
  PID and network namespaces it creates and that vanish with it); the host's network
  is never touched.
"""
