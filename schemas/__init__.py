"""ringfence schemas package."""
