"""Target health checks, as Elastic Load Balancing runs them (`checker`)."""
