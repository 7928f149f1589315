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
    (["inspect", "--space", "{binary}.yaml", "--arch", "max"], "binary.yaml"),
    (["inspect", "--space", "cifar-small", "--arch", "{binary}.json"], "binary.json"),
    (["train", "--config", "{binary}.yaml"], "binary.yaml"),
    (["train", "--config", "{broken}.yaml"], "broken.yaml"),
    (["profile", "--profile", "{binary}.yaml"], "binary.yaml"),
    (["latency-check", "--table", "{binary}.json"], "binary.json"),
]
if not torch.cuda.is_available():
    CASES.append((["train", "device=cuda"], "cuda"))


@pytest.mark.parametrize("argv,named", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_a_clean_refusal(argv, named, tmp_path):
    inputs, cwd = tmp_path / "inputs", tmp_path / "cwd"
    inputs.mkdir(), cwd.mkdir()
    for ext in ("yaml", "json"):
        (inputs / f"binary.{ext}").write_bytes(bytes(range(128, 256)))  # not UTF-8
        (inputs / f"broken.{ext}").write_text("a: [1, 2\n")  # YAML cut short
    argv = [a.format(binary=inputs / "binary", broken=inputs / "broken") for a in argv]
    proc = subprocess.run([sys.executable, "-m", "bignas", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and named in proc.stderr, proc.stderr
    assert list(cwd.iterdir()) == []  # nothing written


def test_a_bug_is_shown_whole_and_asks_for_a_report(tmp_path):
    # A subcommand that fails in a way no bad input explains: main() shows the traceback and
    # asks for a report, with exit code 1 (not 2, which means "your input was refused").
    code = ("import sys, argparse; from bignas import cli\n"
            "p = cli.build_parser(); args = p.parse_args(['inspect', '--space', 'cifar-small', '--arch', 'max'])\n"
            "args.func = lambda a: 1 / 0\n"
            "cli.build_parser = lambda: type('P', (), {'parse_args': lambda self, argv: args})()\n"
            "sys.exit(cli.main([]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr and "please report it" in proc.stderr
