"""bignas: train one elastic supernet, profile devices, extract constrained children."""

__version__ = "0.1.0"
