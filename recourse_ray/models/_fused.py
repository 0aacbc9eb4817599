"""Fused training kernel (placeholder until the numba kernel lands)."""
AVAILABLE = False
UNAVAILABLE_REASON = "not built yet"
