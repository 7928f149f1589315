"""Elastic ops, blocks, the supernet, its training step and static-child extraction."""

from bignas.nn.extract import embed, extract
from bignas.nn.child import StaticNet
from bignas.nn.step import SupernetStep
from bignas.nn.supernet import Supernet

__all__ = ["Supernet", "SupernetStep", "StaticNet", "embed", "extract"]
