"""Shared test settings."""
from hypothesis import settings

# CI machines are shared and slow: a property test is judged by what it finds, never by how fast
# one example ran (hypothesis's default 200 ms deadline fails loaded machines at random).
settings.register_profile("vpclab", deadline=None)
settings.load_profile("vpclab")
