"""Shared session fixtures (placeholder until the synthetic model fixture lands)."""
