"""Bad input on the command line: exit code 2, a message naming the flag, file or key, no
traceback, and nothing written."""

import subprocess
import sys

import pytest
import torch

CASES = [
    (["search", "--run", "r", "--out", "o", "--max-mflops", "nan"], "--max-mflops"),
    (["search", "--run", "r", "--out", "o", "--max-latency-ms", "-1"], "--max-latency-ms"),
    (["search", "--run", "r", "--out", "o", "--budget", "0"], "--budget"),
    (["search", "--run", "r", "--out", "o", "--device", "tpu"], "--device"),
    (["search", "--run", "nowhere", "--out", "o", "--max-mflops", "5"], "run.json"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--config", "missing.yaml"], "missing.yaml"),
    (["train", "optimizer.lr=[0.1"], "optimizer.lr"),
    (["train", "model.dropout=1.5"], "model.dropout"),
    (["train", "optimizer.lr=nan"], "optimizer.lr"),
    (["train", "--resume", "--config", "quickstart.yaml", "--out", "o"], "--config"),
    (["train", "--resume", "--out", "nowhere"], "config.yaml"),
    (["profile", "--profile", "cpu-1t", "--children", "1e8"], "--children"),
    (["profile", "--profile", "no-such-profile"], "no-such-profile"),
    (["evaluate", "--run", "nowhere", "--arch", "max"], "run.json"),
    (["export", "--run", "nowhere", "--arch", "max.json", "--out", "o"], "run.json"),
    (["inspect", "--space", "nowhere.yaml", "--arch", "max"], "nowhere.yaml"),
]
if not torch.cuda.is_available():
    CASES.append((["train", "device=cuda"], "cuda"))


@pytest.mark.parametrize("argv,named", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_a_clean_refusal(argv, named, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bignas", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and named in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
