"""`safe_unpickle`: read an untrusted CIFAR-style pickle without executing code from it.

Security-relevant: only the globals in `_PICKLE_GLOBALS` (numpy array reconstruction and a
latin-1-only `_codecs.encode`) can be loaded; every other global is refused.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bignas.data.errors import DataError

try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles bytes with protocol < 3 as _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


# The only globals CIFAR batch files (and numpy arrays pickled by numpy 1.x or 2.x) refer to.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Loads plain data and numpy arrays; any other global (os.system, eval, ...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy arrays and plain data are allowed"
            ) from None


def safe_unpickle(path: Path) -> Any:
    """Read a CIFAR-style pickle without executing code from it (see `_RestrictedUnpickler`)."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    except Exception as e:  # untrusted bytes: every parse failure is reported the same way
        raise DataError(f"{path}: not a valid CIFAR batch file ({type(e).__name__}: {e})") from e
