"""Preprocessing: crop to non-zero, resample (anisotropy-aware), normalise, write arrays."""
