"""The wheel ships every space, recipe, profile, latency table and the embedded dataset, and an
install finds each of them by name from any directory (no source tree, no cwd-relative paths)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bignas"
SPACES = sorted(p.stem for p in (PACKAGE / "spaces").glob("*.yaml"))
RECIPES = [f"{name}.yaml" for name in sorted(p.stem for p in (PACKAGE / "recipes").glob("*.yaml"))]  # by name, as shipped() lists
PROFILES = sorted(p.stem for p in (PACKAGE / "profiles").glob("*.yaml"))
TABLES = sorted(f"{p.parent.name}/{p.stem}" for p in (PACKAGE / "latency_tables").glob("*/*.json")
                if not p.name.endswith(".check.json"))

LOAD_ALL = """
import json
import bignas
from bignas.latency.profiles import load_profile
from bignas.latency.table import read_table, shipped_tables
from bignas.schema import shipped
from bignas.space import load_space, space_names
from bignas.train.config import load_config, recipe_names

tables = {n: read_table(n) for n in shipped_tables()}
for table in tables.values():
    read_table(table.path, load_space(table.header["space"]).hash)
print(json.dumps({
    "file": bignas.__file__, "table_files": [str(t.path) for t in tables.values()],
    "spaces": [load_space(n).name for n in space_names()],
    "recipes": [n for n in recipe_names() if load_config(n).epochs > 0],
    "profiles": [load_profile(n).name for n in shipped("profiles")],
    "tables": sorted(tables),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tree: an in-tree build writes build/ there and may pack stale files.
    src = tmp / "src"
    shutil.copytree(PACKAGE, src / "bignas", ignore=shutil.ignore_patterns("__pycache__", ".*", "*.partial"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp / "dist")], check=True, cwd=tmp)
    (path,) = (tmp / "dist").glob("bignas-*.whl")
    return path


def test_wheel_holds_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = ([f"bignas/spaces/{n}.yaml" for n in SPACES] + [f"bignas/recipes/{n}" for n in RECIPES]
                + [f"bignas/profiles/{n}.yaml" for n in PROFILES]
                + [f"bignas/latency_tables/{n}{ext}" for n in TABLES for ext in (".json", ".check.json", ".check.png")]
                + ["bignas/data/mnist5k.npz", "bignas/data/README.md", "bignas/schema.py"])
    assert SPACES and RECIPES and PROFILES and TABLES
    assert sorted(set(expected) - names) == []


def test_installed_wheel_loads_everything_by_name(wheel, tmp_path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", LOAD_ALL], cwd=elsewhere, env=env, check=True,
                         capture_output=True, text=True).stdout
    loaded = json.loads(out)
    assert Path(loaded["file"]).resolve().is_relative_to(site.resolve())
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in loaded["table_files"])
    assert (loaded["spaces"], loaded["recipes"], loaded["profiles"], loaded["tables"]) == (
        SPACES, RECIPES, PROFILES, TABLES)
