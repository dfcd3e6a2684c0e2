"""Shared by every engine: the event loop, batched socket I/O, control sockets, files, and the wire formats (GENEVE, PROXY protocol v2)."""
