"""ringfence pipeline package."""
