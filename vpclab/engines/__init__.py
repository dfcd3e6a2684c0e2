"""The data plane: sans-IO engine cores and the thin I/O shells that run them."""
