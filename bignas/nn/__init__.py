"""Elastic ops, blocks, the supernet and static-child extraction."""

from bignas.nn.extract import extract
from bignas.nn.child import StaticNet
from bignas.nn.supernet import Supernet

__all__ = ["Supernet", "StaticNet", "extract"]
