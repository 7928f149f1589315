"""tools/gpu_check.py runs every check on CPU with --dry-run, and a failing check fails the script."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("throughput", "train", "profile", "search")


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/gpu_check.py", "--dry-run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def result_lines(stdout: str) -> dict[str, str]:
    """{check name: PASS / SKIP / FAIL} from the result lines."""
    results = {}
    for line in stdout.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("PASS", "SKIP", "FAIL"):
            results[rest.split(":", 1)[0]] = verdict
    return results


def test_dry_run_passes_every_check(tmp_path):
    done = gpu_check("--out", str(tmp_path / "scratch"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert result_lines(done.stdout) == {name: "PASS" for name in CHECKS}, done.stdout
    assert "summary: 4 PASS, 0 SKIP, 0 FAIL" in done.stdout
    assert (tmp_path / "scratch" / "run" / "supernet.pt").is_file()


def test_a_failing_check_fails_the_script_and_the_others_still_run(tmp_path):
    scratch = tmp_path / "a-file"
    scratch.write_text("not a folder")  # every check that writes files fails; throughput writes none
    done = gpu_check("--out", str(scratch))
    assert done.returncode == 1, done.stdout + done.stderr
    assert result_lines(done.stdout) == {"throughput": "PASS", "train": "FAIL", "profile": "FAIL",
                                         "search": "FAIL"}, done.stdout
    assert "summary: 1 PASS, 0 SKIP, 3 FAIL" in done.stdout
    assert "NotADirectoryError" in done.stderr  # the unexpected exception's traceback is printed
    assert scratch.read_text() == "not a folder"
