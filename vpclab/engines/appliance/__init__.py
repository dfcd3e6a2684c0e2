"""The GWLB appliance run on target instances: a sans-IO core (`core`) behind a thin I/O shell (`process`)."""
