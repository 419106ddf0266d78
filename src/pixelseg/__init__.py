"""pixelseg."""
