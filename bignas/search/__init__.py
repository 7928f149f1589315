"""Accuracy evaluation of children and the architecture search."""
