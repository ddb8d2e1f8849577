"""Networks built from an ArchitectureDescription, in 2D and 3D with the same parameter names."""
