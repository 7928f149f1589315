"""The one error the data package raises: a dataset spec, path, file or argument that cannot be used."""

from __future__ import annotations

from bignas.errors import BignasError


class DataError(BignasError):
    """A dataset spec, path, file or argument that cannot be used; the message names the path or argument."""
