"""Experiment planners, found by class name with `-pl`."""
