"""ringfence agents package."""
