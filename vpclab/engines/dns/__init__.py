"""The Amazon-provided DNS server of a VPC (Route 53 Resolver) and the lab's public resolver (`resolver`)."""
