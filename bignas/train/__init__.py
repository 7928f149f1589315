"""Supernet training: config, sandwich step, schedule, checkpoints, recipe, data parallelism."""
