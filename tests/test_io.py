"""Output folders: refused before the work when they must not be replaced, replaced whole or not at all."""

import os

import pytest

from bignas.errors import BignasError
from bignas.io import atomic_dir, check_output_dir

OUTPUTS = ("a.txt", "b*.json")


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first" and oct(out.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("mid-write")
    assert (out / "a.txt").read_text() == "first"  # the earlier folder, untouched
    with atomic_dir(out) as tmp:
        (tmp / "b1.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["b1.json"]  # no file of the earlier set is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder either


def test_output_folders_that_must_not_be_replaced(tmp_path):
    check_output_dir(tmp_path / "new" / "deeper", OUTPUTS, BignasError, "export")  # will be created
    (tmp_path / "file").write_text("")
    with pytest.raises(BignasError, match="file: exists and is not a folder"):
        check_output_dir(tmp_path / "file", OUTPUTS, BignasError, "export")
    with pytest.raises(BignasError, match="cannot be created"):
        check_output_dir(tmp_path / "file" / "out", OUTPUTS, BignasError, "export")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("")
    (mine / "b2.json").write_text("")
    check_output_dir(mine, OUTPUTS, BignasError, "export")  # an earlier export: replaceable
    (mine / "thesis.tex").write_text("")
    with pytest.raises(BignasError, match="holds more than an earlier export's output .*thesis.tex"):
        check_output_dir(mine, OUTPUTS, BignasError, "export")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(BignasError, match="not a writable folder"):
            check_output_dir(locked / "out", OUTPUTS, BignasError, "export")


def test_what_a_killed_folder_write_left_is_undone_by_the_next(tmp_path, capsys):
    out = tmp_path / "out"
    # a kill between the two renames: the earlier folder sits in .out.XXXXXXXX.old/out, OUT is gone
    (tmp_path / ".out.abcdefgh.old" / "out").mkdir(parents=True)
    (tmp_path / ".out.abcdefgh.old" / "out" / "a.txt").write_text("earlier")
    (tmp_path / ".out.ijklmnop.tmp").mkdir()  # a half-built folder of a killed write
    (tmp_path / ".out.v2.qrstuvwx.tmp").mkdir()  # another folder's (out.v2) temporary: not ours to remove
    with pytest.raises(RuntimeError, match="fails"):
        with atomic_dir(out):
            raise RuntimeError("this write fails too")
    assert (out / "a.txt").read_text() == "earlier" and "restored" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.v2.qrstuvwx.tmp", "out"]
