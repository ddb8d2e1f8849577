"""Training parts: augmentation, losses, metrics, optimisation, progress log and checkpoints."""
