"""Faults with real processes: `python -m bignas ...` killed (SIGKILL) or interrupted (SIGINT) at
the worst moment, then run again. Nothing half-written is read, nothing finished is done twice.

To hit a moment that lasts milliseconds (a checkpoint write), the test polls for the sign of it
(the temporary file of an atomic write), freezes the process with SIGSTOP, and looks again: what
holds while the process cannot move is the state it is really in. Only then does SIGKILL (or
SIGINT) land, exactly there. A look that comes too late lets the process go on and waits for the
next chance, so the tests neither miss the moment nor pass without having hit it.
"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bignas.cli import main
from bignas.export import INT8_FILE, OUTPUTS
from bignas.train.run_dir import RunDir
from conftest import assert_same_run, train
from test_latency import TINY_SPACE

FP32_OUTPUTS = [name for name in OUTPUTS if name != INT8_FILE]  # an export without --int8

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")


def _default_sigint():
    """A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored:
    give the child the default, so Ctrl-C reaches it however the tests were started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def bignas(*args):
    return subprocess.Popen([sys.executable, "-m", "bignas", *map(str, args)], preexec_fn=_default_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _stopped(pid):
    """Whether every thread of `pid` is stopped (Linux; elsewhere, after a pause)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        time.sleep(0.2)
        return True
    states = []
    for stat in tasks.glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):  # a thread that just ended
            pass
    return all(s in "Tt" for s in states)


def stop_when(proc, sign, timeout=300):
    """Poll until `sign()` returns something true, then freeze `proc` (SIGSTOP) and ask again.
    Returns that second answer, which holds while `proc` stays stopped; the caller kills it
    there or sends SIGCONT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before the moment to stop it came: "
                        f"{proc.stderr.read()[-3000:]}")
        if sign():
            proc.send_signal(signal.SIGSTOP)
            while not _stopped(proc.pid) and proc.poll() is None:
                time.sleep(0.001)
            seen = sign()
            if seen:
                return seen
            proc.send_signal(signal.SIGCONT)  # the moment passed before the stop landed: next one
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"no moment to stop the process came within {timeout} s")


def kill(proc):
    proc.send_signal(signal.SIGKILL)  # delivered to a stopped process too
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def step_of(path):
    """The step of `step-XXXXXXXX.pt` or of its temporary `.step-XXXXXXXX.pt.RANDOM.tmp`."""
    return int(path.name.lstrip(".")[len("step-"):][:8])


@pytest.fixture(scope="module")
def fault_config(tiny_config, tmp_path_factory):
    """tiny_config on the tiny space of test_latency for one epoch of 4 steps (batch 64), a
    checkpoint after every step: seconds of training, a checkpoint write every few hundred ms."""
    root = tmp_path_factory.mktemp("faults")
    space = root / "tiny-space.yaml"
    space.write_text(TINY_SPACE.replace("num_classes: 4", "num_classes: 10"))  # as the data
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg.update(space=str(space), epochs=1, batch_size=64, checkpoint={"every_steps": 1, "keep": 2})
    path = root / "faults.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def straight_run(fault_config, tmp_path_factory):
    """The same run, never interrupted: what every interrupted one must end equal to; also the
    trained run the export and search tests use (read-only). Run in this process to save a start-up."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", "--config", str(fault_config), "--out", str(run), "--quiet"]) == 0
    return run


def test_kill_during_a_checkpoint_write_then_resume_continues_exactly(fault_config, straight_run, tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"

    def writing():
        """The temporaries of checkpoint writes in progress (bignas.io.atomic_path names them
        `.step-XXXXXXXX.pt.RANDOM.tmp`), once an earlier checkpoint is complete to resume from."""
        temps = list(ckpts.glob(".step-*.pt.*.tmp"))
        return temps if temps and list(ckpts.glob("step-*.pt")) else None

    proc = train(fault_config, run)
    temps = stop_when(proc, writing)
    kill(proc)
    # Proof the kill landed mid-write: the temporary outlived the process (a finished write renames
    # it away, a failed one deletes it), and the checkpoint it was becoming does not exist.
    assert temps and all(t.exists() for t in temps)
    assert not any((ckpts / f"step-{step_of(t):08d}.pt").exists() for t in temps)
    assert not (run / "supernet.pt").exists()

    finish(train(fault_config, run, "--resume"))
    assert not list(run.glob(".*.tmp")) and not list(ckpts.glob(".*.tmp"))  # the stale temporaries are gone
    assert_same_run(run, straight_run)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(fault_config, straight_run, tmp_path):
    # tests/test_run_dir.py checks RunDir's fallback on a hand-made checkpoint; this one checks that
    # a real killed run resumed from the checkpoint before ends where an uninterrupted run does.
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    proc = train(fault_config, run)
    stop_when(proc, lambda: any(step_of(p) >= 2 for p in ckpts.glob("step-*.pt"))
              and not (run / "supernet.pt").exists())
    kill(proc)
    found = sorted(ckpts.glob("step-*.pt"))
    assert len(found) >= 2 and not (run / "supernet.pt").exists()
    newest = found[-1]
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])  # cut short, as by a full disk

    _, err = finish(train(fault_config, run, "--resume"))
    assert f"warning: {newest}: not a readable checkpoint" in err, err
    assert "resuming from the checkpoint before it" in err and "Traceback" not in err
    assert_same_run(run, straight_run)


def test_a_damaged_final_weights_file_is_refused_then_rewritten_from_the_last_checkpoint(straight_run, tmp_path,
                                                                                          capsys):
    run = tmp_path / "run"
    shutil.copytree(straight_run, run)
    final = run / "supernet.pt"
    good = final.read_bytes()
    final.write_bytes(good[:len(good) // 2])  # cut short, as by a disk error after the run ended
    assert main(["evaluate", "--run", str(run), "--arch", "max"]) == 2
    err = capsys.readouterr().err
    assert f"{final}: not a readable weights file" in err and f"'bignas train --out {run} --resume'" in err, err
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    capsys.readouterr()
    assert_same_run(run, straight_run)
    assert main(["evaluate", "--run", str(run), "--arch", "max"]) == 0


def test_a_killed_export_leaves_the_earlier_export_whole(straight_run, tmp_path, capsys):
    run, space = straight_run, RunDir(straight_run).read_space()
    archs = {}
    for name, child in (("max", space.max()), ("min", space.min())):
        archs[name] = tmp_path / f"{name}.json"
        archs[name].write_text(json.dumps(child.to_dict(space)))
    out = tmp_path / "out"
    assert main(["export", "--run", str(run), "--arch", str(archs["max"]), "--out", str(out)]) == 0
    before = files(out)
    assert sorted(before) == sorted(FP32_OUTPUTS)

    def half_built():
        """The new export's folder beside OUT (bignas.io.atomic_dir: `.out.RANDOM.tmp`) with its first
        file written, while the earlier OUT has not been moved aside (`.out.RANDOM.old`) yet."""
        temps = [t for t in tmp_path.glob(".out.*.tmp") if (t / "child.pt").is_file()]
        return temps if temps and not list(tmp_path.glob(".out.*.old")) else None

    proc = bignas("export", "--run", run, "--arch", archs["min"], "--out", out)
    temps = stop_when(proc, half_built)
    kill(proc)
    assert all((t / "child.pt").is_file() for t in temps)  # it was killed while it wrote the new export
    assert files(out) == before  # the earlier export, whole: not a mix with the new child.pt

    capsys.readouterr()
    assert main(["export", "--run", str(run), "--arch", str(archs["min"]), "--out", str(out)]) == 0
    card = json.loads(capsys.readouterr().out)  # the stale folder beside OUT did not get in the way
    assert card["arch"] == space.min().to_dict(space)
    after = files(out)
    assert sorted(after) == sorted(FP32_OUTPUTS) and json.loads(after["card.json"]) == card
    assert after["child.pt"] != before["child.pt"]


def test_ctrl_c_during_a_search_then_the_rerun_evaluates_only_the_rest(straight_run, tmp_path, capsys):
    run = tmp_path / "run"  # a copy without an accuracy cache: every child is evaluated here
    shutil.copytree(straight_run, run, ignore=shutil.ignore_patterns("accuracy.jsonl"))
    space = RunDir(run).read_space()
    cache, out = run / "accuracy.jsonl", tmp_path / "search"
    budget = 12  # every child of the tiny space: some seconds of evaluation

    def cached():
        """Hashes of the children in the accuracy cache (complete lines only)."""
        lines = cache.read_text().split("\n")[:-1] if cache.exists() else []
        return {json.loads(line)["hash"] for line in lines}

    search = ["search", "--run", str(run), "--budget", str(budget), "--out", str(out), "--quiet"]
    proc = bignas(*search)
    stop_when(proc, lambda: len(cached()) >= 2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, handled once the process goes on
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["bignas search: interrupted (what was finished is kept)"], err
    assert not out.exists() and not list(tmp_path.glob(".search.*"))  # OUT never half-written
    before = cached()

    capsys.readouterr()
    assert main(search) == 0  # the same search again, to the end (in this process: a start-up saved)
    doc = json.loads((out / "search.json").read_text())
    evaluated = {space.child_from_dict(p["arch"]).hash for p in doc["devices"][0]["evaluated"]}
    assert before < evaluated  # the same seeded search again, and the interrupt left work undone
    assert doc["evaluated_fresh"] == len(evaluated - before)  # nothing recorded before was evaluated again
    assert doc["cache_lines_skipped"] == 0  # and Ctrl-C cut no record short
    assert len(cache.read_text().splitlines()) == len(evaluated) == len(cached())
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
