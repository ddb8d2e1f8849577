"""Trainer classes, found by class name with `-tr`."""
