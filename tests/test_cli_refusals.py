"""Bad input on the command line: exit code 2, a message naming the flag, file or key, no
traceback, and nothing written: no file in the working folder, no input file added or changed.

Every case runs `bignas ...` (or the device runner, `python -m bignas.latency.device`) in a
process of its own, in an empty working folder, on a fresh copy of one set of inputs built once:
a run directory of a tiny space with untrained weights, a latency table for it (made up, not
measured: refusals come before any timing), bundles, ImageFolder trees and broken files. `{in}`
in a case stands for that copy. The processes are forked from a server that has imported torch
and bignas once (multiprocessing's forkserver), so a case costs a fork, not a Python start-up.
"""

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from bignas.latency.fit import features, calibrate, calibration_children
from bignas.latency.keys import space_keys
from bignas.latency.profiles import load_profile
from bignas.latency.table import LatencyTable, make_header, write_table
from bignas.nn import Supernet
from bignas.search.problem import Problem, SearchError
from bignas.space import load_space, parse_space
from bignas.train.config import TrainConfig
from bignas.train.run_dir import RunDir
from conftest import write_cifar10
from test_latency import FAST_PROFILE, TINY_SPACE

NO_GPU = not torch.cuda.is_available()


def bug(reason: str):
    """A case that shows a bug: it fails the refusal test until fixed, then XPASS fails the suite
    so that the mark is removed."""
    return pytest.mark.xfail(strict=True, reason=reason)


CASES = [
    # ---------------------------------------------------------------- inspect
    (["inspect", "--space", "nowhere.yaml", "--arch", "max"], "nowhere.yaml"),
    (["inspect", "--space", "no-such-space", "--arch", "max"], "no-such-space"),
    (["inspect", "--space", "{in}/binary.yaml", "--arch", "max"], "binary.yaml"),
    (["inspect", "--space", "{in}/folder.yaml", "--arch", "max"], "folder.yaml"),
    (["inspect", "--space", "{in}/list.yaml", "--arch", "max"], "list.yaml"),
    (["inspect", "--space", "{in}/fast.yaml", "--arch", "max"], "fast.yaml"),  # a profile, not a space
    (["inspect", "--space", "{in}/huge-resolution.yaml", "--arch", "max"], "resolutions"),
    (["inspect", "--space", "{in}/slash-name.yaml", "--arch", "max"], "name"),
    (["inspect", "--space", "cifar-small", "--arch", "{in}/binary.json"], "binary.json"),
    (["inspect", "--space", "cifar-small", "--arch", "{in}/empty.json"], "empty.json"),
    (["inspect", "--space", "cifar-small", "--arch", "{in}/folder.json"], "folder.json"),
    (["inspect", "--space", "cifar-small", "--arch", "{in}/list.json"], "list.json"),
    pytest.param(["inspect", "--space", "cifar-small", "--arch", "{in}/deep.json"], "deep.json"),
    pytest.param(["inspect", "--space", "cifar-small", "--arch", "{in}/bigint.json"], "bigint.json"),
    (["inspect", "--space", "cifar-small", "--arch", "{in}/resolution-string.json"], "resolution"),
    (["inspect", "--space", "cifar-small", "--arch", "{in}/resolution-nan.json"], "resolution"),
    (["inspect", "--space", "cifar-small", "--arch", "{in}/tiny-max.json"], "space"),
    (["inspect", "--space", "{in}/tiny.yaml", "--arch", "{in}/kernels-short.json"], "stages[0].kernels"),
    (["inspect", "--space", "{in}/tiny.yaml", "--arch", "{in}/extra-field.json"], "colour"),
    (["inspect", "--space", "cifar-small", "--arch", "random", "--seed", "x"], "--seed"),
    # ---------------------------------------------------------------- train
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "nan"], "--epochs"),
    (["train", "--epochs", "-3"], "--epochs"),
    (["train", "epochs=.inf"], "epochs"),
    (["train", "--config", "missing.yaml"], "missing.yaml"),
    (["train", "--config", "{in}/binary.yaml"], "binary.yaml"),
    (["train", "--config", "{in}/broken.yaml"], "broken.yaml"),
    (["train", "--config", "{in}/empty.yaml"], "empty.yaml"),
    (["train", "--config", "{in}/folder.yaml"], "folder.yaml"),
    (["train", "--config", "{in}/list.yaml"], "list.yaml"),
    (["train", "--config", "{in}/tiny.yaml"], "unknown key"),  # a space, not a config
    (["train", "optimizer.lr=[0.1"], "optimizer.lr"),
    (["train", "seed=@"], "seed"),
    (["train", "optimizer.lr=nan"], "optimizer.lr"),
    (["train", "optimizer.lr=.nan"], "optimizer.lr"),
    (["train", "optimizer.lr=.inf"], "optimizer.lr"),
    (["train", "optimizer.lr=-0.1"], "optimizer.lr"),
    (["train", "model.dropout=1.5"], "model.dropout"),
    (["train", "model.dropout=.nan"], "model.dropout"),
    (["train", "model.drop_connect=1"], "model.drop_connect"),
    (["train", "batch_size=0"], "batch_size"),
    (["train", "log.every_steps=0"], "log.every_steps"),
    (["train", "checkpoint.every_steps=0"], "checkpoint.every_steps"),
    (["train", "sandwich.num_random=-1"], "sandwich.num_random"),
    (["train", "precision=fp16"], "precision"),
    (["train", "no_such_key=1"], "no_such_key"),
    (["train", "space=../escape"], "../escape"),
    (["train", "space={in}/huge-resolution.yaml"], "resolutions"),
    (["train", "--data", "bogus:x"], "bogus:x"),
    (["train", "--data", "cifar10:{in}/nowhere"], "nowhere"),
    (["train", "--data", "cifar10:{in}/binary.json"], "binary.json"),
    (["train", "--data", "cifar100:{in}/cifar"], "cifar"),  # CIFAR-10 files
    (["train", "--data", "imagefolder:{in}/cmyk-tree"], "cmyk.jpg"),
    (["train", "--data", "imagefolder:{in}/gray16-tree"], "gray16.png"),
    (["train", "--data", "imagefolder:{in}/transparent-tree"], "transparent.png"),
    (["train", "--data", "imagefolder:{in}/rgb-tree", "space={in}/tiny.yaml", "batch_size=1", "epochs=1",
      "image_size=100000"], "image_size"),  # 30 GB an image
    (["train", "--out", "{in}/file.txt"], "file.txt"),
    (["train", "--out", "{in}/file.txt/run"], "file.txt"),
    (["train", "--out", "{in}/run"], "run"),  # a finished run is not trained over
    pytest.param(["train", "--out", "", "--data", "cifar10:{in}/cifar", "space={in}/tiny.yaml", "batch_size=16",
                  "epochs=1", "eval.calibration_images=16"], "--out"),
    (["train", "--resume", "--config", "quickstart.yaml", "--out", "o"], "--config"),
    (["train", "--resume", "--out", "nowhere"], "config.yaml"),
    (["train", "--resume", "--out", "{in}/run", "seed=1"], "seed"),
    # ---------------------------------------------------------------- evaluate
    (["evaluate", "--run", "nowhere", "--arch", "max"], "run.json"),
    (["evaluate", "--run", "{in}/file.txt", "--arch", "max"], "file.txt"),
    (["evaluate", "--run", "{in}/run-without-space", "--arch", "max"], "space"),
    (["evaluate", "--run", "{in}/run", "--arch", "{in}/folder.json"], "folder.json"),
    (["evaluate", "--run", "{in}/run", "--arch", "{in}/cifar-small-max.json"], "cifar-small"),
    (["evaluate", "--run", "{in}/run", "--arch", "max", "--split", "train"], "--split"),
    (["evaluate", "--run", "{in}/run", "--arch", "max", "--calibration-images", "0"], "--calibration-images"),
    (["evaluate", "--run", "{in}/run", "--arch", "max", "--data", "cifar10:{in}/nowhere"], "nowhere"),
    (["evaluate", "--run", "{in}/run", "--arch", "max", "--data", "imagefolder:{in}/cmyk-tree"], "cmyk.jpg"),
    (["evaluate", "--run", "{in}/run", "--arch", "max", "--data", "imagefolder:{in}/rgb-tree"], "2 classes"),
    # ---------------------------------------------------------------- profile
    (["profile", "--profile", "cpu-1t", "--children", "1e8"], "--children"),
    (["profile", "--profile", "cpu-1t", "--children", "0"], "--children"),
    (["profile", "--profile", "cpu-1t", "--children", "3"], "--children"),
    (["profile", "--space", "cifar-small"], "--profile"),
    (["profile", "--profile", "no-such-profile"], "no-such-profile"),
    (["profile", "--profile", "{in}/binary.yaml"], "binary.yaml"),
    (["profile", "--profile", "{in}/slash-profile.yaml", "--space", "{in}/tiny.yaml"], "name"),
    pytest.param(["profile", "--profile", "{in}/fast.yaml", "--space", "{in}/tiny.yaml", "--out", "{in}/folder.json"],
                 "folder.json"),
    (["profile", "--profile", "{in}/fast.yaml", "--space", "{in}/tiny.yaml", "--out", "{in}/file.txt/t.json"],
     "file.txt"),
    (["profile", "--profile", "{in}/fast.yaml", "--space", "{in}/tiny.yaml", "--bundle", "{in}/file.txt"],
     "file.txt"),
    (["profile", "--calibrate", "{in}/nowhere.json"], "nowhere.json"),
    (["profile", "--calibrate", "{in}/binary.json"], "binary.json"),
    (["profile", "--calibrate", "{in}/table.json", "--space", "cifar-small"], "space_hash"),
    # ---------------------------------------------------------------- latency-check
    (["latency-check", "--table", "{in}/binary.json"], "binary.json"),
    (["latency-check", "--table", "{in}/nowhere.json"], "nowhere.json"),
    (["latency-check", "--table", "{in}/folder.json"], "folder.json"),
    (["latency-check", "--table", "{in}/list.json"], "list.json"),
    (["latency-check", "--table", "{in}/table-path-space.json"], "header.space"),
    (["latency-check", "--table", "{in}/table.json", "--space", "cifar-small"], "space_hash"),
    (["latency-check", "--table", "{in}/table.json", "--children", "1"], "--children"),
    (["latency-check", "--table", "{in}/table.json", "--children", "nan"], "--children"),
    (["latency-check", "--table", "{in}/table.json", "--children", "20000"], "--children"),
    # ---------------------------------------------------------------- search
    (["search", "--run", "r", "--out", "o", "--max-mflops", "nan"], "--max-mflops"),
    (["search", "--run", "r", "--out", "o", "--max-latency-ms", "-1"], "--max-latency-ms"),
    (["search", "--run", "r", "--out", "o", "--max-params-m", "inf"], "--max-params-m"),
    (["search", "--run", "r", "--out", "o", "--budget", "0"], "--budget"),
    (["search", "--run", "r", "--out", "o", "--budget", "100001"], "--budget"),
    (["search", "--run", "r", "--out", "o", "--device", "tpu"], "--device"),
    (["search", "--run", "r", "--out", "o", "--strategy", "nope"], "--strategy"),
    (["search", "--run", "nowhere", "--out", "o", "--max-mflops", "5"], "run.json"),
    (["search", "--run", "{in}/run-without-space", "--out", "o"], "space"),
    (["search", "--run", "{in}/run", "--out", "{in}/file.txt"], "file.txt"),
    (["search", "--run", "{in}/run", "--out", "{in}/file.txt/s"], "file.txt"),
    (["search", "--run", "{in}/run", "--out", "{in}/run"], "run"),  # a folder of other things
    pytest.param(["search", "--run", "{in}/run", "--out", "", "--budget", "2", "--max-mflops", "1000"], "--out"),
    (["search", "--run", "{in}/run", "--out", "o", "--option", "no_such_option=1"], "no_such_option"),
    (["search", "--run", "{in}/run", "--out", "o", "--option", "coarse_share=nan"], "coarse_share"),
    (["search", "--run", "{in}/run", "--out", "o", "--option", "mutate_prob=2"], "mutate_prob"),
    (["search", "--run", "{in}/run", "--out", "o", "--strategy", "evolution", "--option", "sample_size=50"],
     "sample_size"),
    (["search", "--run", "{in}/run", "--out", "o", "--table", "{in}/nowhere.json"], "nowhere.json"),
    (["search", "--run", "{in}/run", "--out", "o", "--table", "{in}/binary.json"], "binary.json"),
    (["search", "--run", "{in}/run", "--out", "o", "--table", "cpu-1t/cifar-small"], "space_hash"),
    (["search", "--run", "{in}/run", "--out", "o", "--table", "{in}/table.json", "--max-latency-ms", "1",
      "--max-latency-ms", "2"], "one budget per table"),
    (["search", "--run", "{in}/run", "--out", "o", "--table", "{in}/table.json", "--max-latency-ms", "1e-6",
      "--budget", "5"],
     "smallest child"),
    (["search", "--run", "{in}/run", "--out", "o", "--data", "cifar10:{in}/nowhere"], "nowhere"),
    (["search", "--run", "{in}/run", "--out", "o", "--data", "imagefolder:{in}/cmyk-tree"], "cmyk.jpg"),
    (["search", "--run", "{in}/run", "--out", "o", "--data", "imagefolder:{in}/rgb-tree"], "2 classes"),
    (["search", "--run", "{in}/run", "--out", "o", "--budget", "13"], "12 distinct children"),  # tiny has 12
    # ---------------------------------------------------------------- compare
    (["compare", "{in}/nowhere", "--out", "c.png"], "nowhere"),
    (["compare", "{in}/folder.json", "--out", "c.png"], "search.json"),
    (["compare", "{in}/search-binary", "--out", "c.png"], "search.json"),
    # ---------------------------------------------------------------- export
    (["export", "--run", "nowhere", "--arch", "max.json", "--out", "o"], "run.json"),
    (["export", "--run", "{in}/run-without-space", "--arch", "{in}/tiny-max.json", "--out", "o"], "space"),
    (["export", "--run", "{in}/run", "--arch", "max", "--out", "o"], "max"),  # 'max' is not a file
    (["export", "--run", "{in}/run", "--arch", "{in}/folder.json", "--out", "o"], "folder.json"),
    (["export", "--run", "{in}/run", "--arch", "{in}/cifar-small-max.json", "--out", "o"], "cifar-small"),
    (["export", "--run", "{in}/run", "--arch", "{in}/tiny-max.json", "--out", "{in}/file.txt"], "file.txt"),
    (["export", "--run", "{in}/run", "--arch", "{in}/tiny-max.json", "--out", "{in}/file.txt/e"], "file.txt"),
    (["export", "--run", "{in}/run", "--arch", "{in}/tiny-max.json", "--out", "{in}/run"], "run"),
    (["export", "--run", "{in}/run", "--arch", "{in}/tiny-max.json", "--table", "{in}/binary.json", "--out", "o"],
     "binary.json"),
    (["export", "--run", "{in}/run", "--arch", "{in}/tiny-max.json", "--table", "cpu-1t/cifar-small",
      "--out", "o"], "space_hash"),
    # ---------------------------------------------------------------- quickstart
    (["quickstart", "--out", "{in}/file.txt"], "file.txt"),
    (["quickstart", "--out", "{in}/file.txt/q"], "file.txt"),
    # ---------------------------------------------------------------- device runner (no torch)
    (["bignas.latency.device", "{in}/nowhere", "--out", "t.json"], "nowhere"),
    (["bignas.latency.device", "{in}/bundle-binary", "--out", "t.json"], "manifest.json"),
    (["bignas.latency.device", "{in}/bundle-blocks-not-a-list", "--out", "t.json"], "blocks"),
    (["bignas.latency.device", "{in}/bundle-escapes", "--out", "t.json"], "inside the bundle"),
    (["bignas.latency.device", "{in}/bundle-absolute", "--out", "t.json"], "inside the bundle"),
    (["bignas.latency.device", "{in}/bundle-missing-model", "--out", "t.json"], "reference.onnx"),
    (["bignas.latency.device", "{in}/bundle-escapes", "--out", "{in}/folder.json"], "folder.json"),
    (["bignas.latency.device", "{in}/bundle-escapes", "--out", "{in}/file.txt/t.json"], "file.txt"),
]
if NO_GPU:
    CASES += [(["train", "device=cuda"], "cuda"),
              (["evaluate", "--run", "{in}/run", "--arch", "max", "--device", "cuda"], "cuda"),
              (["search", "--run", "{in}/run", "--out", "o", "--device", "cuda"], "cuda"),
              (["export", "--run", "{in}/run", "--arch", "{in}/tiny-max.json", "--out", "o", "--device", "cuda"],
               "cuda")]


CASE_TIMEOUT_S = 120
_PRELOAD = ["torch", "bignas.cli", "bignas.latency.device", "bignas.train.recipe", "bignas.search.command",
            "bignas.export", "bignas.latency.profiling", "bignas.quickstart"]


def _run_case(module: str, argv: list[str], cwd: str, out: str, err: str) -> None:
    """In the forked process: run the command as `python -m MODULE ARGV` would, output to files."""
    os.chdir(cwd)
    import resource  # a case that allocates without bound fails here, not the machine
    vm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm_kb * 1024 + (8 << 30), resource.RLIM_INFINITY))
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    sys.argv = [module, *argv]
    if module == "bignas.latency.device":
        from bignas.latency.device import main
    else:
        from bignas.cli import main
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)


@pytest.fixture(scope="module")
def run_command():
    """run_command(module, argv, cwd, logs) -> (exit code, stderr), in a process of its own."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)

    def run(module: str, argv: list[str], cwd: Path, logs: Path) -> tuple[int, str]:
        out, err = logs / "stdout", logs / "stderr"
        process = ctx.Process(target=_run_case, args=(module, argv, str(cwd), str(out), str(err)))
        process.start()
        process.join(CASE_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
            pytest.fail(f"no refusal within {CASE_TIMEOUT_S} s: {module} {' '.join(argv)}")
        return process.exitcode, err.read_text(errors="replace")
    return run


def _argv(case) -> list[str]:
    return (case.values if hasattr(case, "values") else case)[0]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` and the sha256 of each file's content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _child_json(path: Path, space, **changes) -> Path:
    path.write_text(json.dumps({**space.max().to_dict(space), **changes}))
    return path


def _image_tree(root: Path, name: str, image: Image.Image) -> Path:
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            Image.new("RGB", (12, 12), (40, 90, 200)).save(root / split / label / "0.png")
    image.save(root / "train" / "b" / name)
    return root


def _bundle(root: Path, manifest: dict | bytes) -> None:
    root.mkdir()
    path = root / "manifest.json"
    path.write_bytes(manifest) if isinstance(manifest, bytes) else path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The inputs every case may name (each case gets its own copy)."""
    root = tmp_path_factory.mktemp("inputs")
    for ext in ("yaml", "json"):
        (root / f"binary.{ext}").write_bytes(bytes(range(128, 256)))  # not UTF-8
        (root / f"broken.{ext}").write_text("a: [1, 2\n")  # YAML cut short
        (root / f"list.{ext}").write_text("[1, 2]\n")  # valid, but not a mapping
        (root / f"folder.{ext}").mkdir()  # a folder named like a file
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # deeper than Python's recursion limit
    (root / "bigint.json").write_text('{"resolution": ' + "9" * 5000 + "}")  # over Python's digit limit
    (root / "file.txt").write_text("an existing file\n")
    space_text = TINY_SPACE.replace("num_classes: 4", "num_classes: 10")
    (root / "tiny.yaml").write_text(space_text)
    (root / "huge-resolution.yaml").write_text(space_text.replace("resolutions: [12, 16]", "resolutions: [100000]"))
    (root / "slash-name.yaml").write_text(space_text.replace("name: tiny", "name: ../../escape"))
    (root / "fast.yaml").write_text(FAST_PROFILE)
    (root / "slash-profile.yaml").write_text(FAST_PROFILE.replace("name: fast", "name: ../../escape"))

    space = parse_space(yaml.safe_load(space_text), str(root / "tiny.yaml"))
    _child_json(root / "tiny-max.json", space)
    _child_json(root / "resolution-string.json", space, resolution="big")
    (root / "resolution-nan.json").write_text(json.dumps({**space.max().to_dict(space), "resolution": float("nan")}))
    small = load_space("cifar-small")
    _child_json(root / "cifar-small-max.json", small)

    # A run as `bignas train` leaves it, with untrained weights (evaluate, search and export only
    # need it to open), and one whose run.json lost its 'space'.
    data = write_cifar10(root / "cifar", n_train=64, n_test=32)
    config = TrainConfig(space=str(root / "tiny.yaml"), data=f"cifar10:{data}", batch_size=16, device="cpu")
    run = RunDir(root / "run")
    run.create(config, space, {"spec": config.data}, world_size=1)
    torch.manual_seed(0)
    run.save_final(Supernet(space).state_dict(), space.hash)
    run.save_checkpoint(0, {"space_hash": space.hash, "config": config.to_dict()}, keep=1)  # enough to refuse
    shutil.copytree(root / "run", root / "run-without-space")
    meta = json.loads((root / "run" / "run.json").read_text())
    meta.pop("space")
    (root / "run-without-space" / "run.json").write_text(json.dumps(meta))

    # A calibrated latency table of the tiny space, made up (ratios grow with the block's place).
    keys = space_keys(space)
    table = LatencyTable(make_header(load_profile(root / "fast.yaml"), space.name, space.hash, 0.1),
                         {str(k): {"ratio": 1.0 + i / 10, "ms": 0.1, "ref_ms": 0.1} for i, k in enumerate(keys)})
    for child in calibration_children(space, 6):
        total, count, *_ = features(table, space, child)
        table.children.append({"arch": child.to_dict(space), "ratio": 0.8 * total + 0.05 * count + 0.3, "ms": 1.0})
    write_table(root / "table.json", calibrate(table, space))
    doc = json.loads((root / "table.json").read_text())
    doc["header"]["space"] = "../../x.yaml"
    (root / "table-path-space.json").write_text(json.dumps(doc))

    _image_tree(root / "cmyk-tree", "cmyk.jpg", Image.new("CMYK", (12, 12), (0, 200, 200, 0)))
    _image_tree(root / "gray16-tree", "gray16.png", Image.new("I;16", (12, 12), 40_000))
    transparent = Image.new("P", (12, 12), 0)
    transparent.putpalette([40, 90, 200, 0, 0, 0] + [0] * 762)
    transparent.putpixel((0, 0), 1)
    transparent.info["transparency"] = 1
    _image_tree(root / "transparent-tree", "transparent.png", transparent)
    _image_tree(root / "rgb-tree", "1.png", Image.new("RGB", (12, 12), (200, 30, 30)))
    (root / "empty.yaml").write_text("")
    (root / "empty.json").write_text("")
    arch = space.max().to_dict(space)
    arch["stages"][0]["kernels"] = arch["stages"][0]["kernels"][:1]
    (root / "kernels-short.json").write_text(json.dumps(arch))
    (root / "extra-field.json").write_text(json.dumps({**space.max().to_dict(space), "colour": "red"}))

    manifest = {"format": "bignas-latency-bundle", "profile": yaml.safe_load(FAST_PROFILE), "space": "tiny",
                "space_hash": space.hash, "reference": "reference.onnx", "blocks": [], "children": []}
    _bundle(root / "bundle-blocks-not-a-list", {**manifest, "blocks": {"file": "a.onnx"}})
    _bundle(root / "bundle-escapes", {**manifest, "blocks": [{"key": "k", "file": "../../etc/passwd"}]})
    _bundle(root / "bundle-binary", bytes(range(128, 256)))
    _bundle(root / "bundle-missing-model", manifest)
    _bundle(root / "bundle-absolute", {**manifest, "reference": "/etc/passwd"})
    (root / "search-binary").mkdir()
    (root / "search-binary" / "search.json").write_bytes(bytes(range(128, 256)))
    return root


@pytest.mark.parametrize("argv,named", CASES, ids=[" ".join(_argv(c)) for c in CASES])
def test_bad_input_is_a_clean_refusal(argv, named, inputs, run_command, tmp_path):
    given, cwd, logs = tmp_path / "in", tmp_path / "cwd", tmp_path / "logs"
    shutil.copytree(inputs, given, symlinks=True)
    cwd.mkdir(), logs.mkdir()
    argv = [a.replace("{in}", str(given)) for a in argv]
    module = argv.pop(0) if argv[0].startswith("bignas.") else "bignas"
    before = _snapshot(given)
    code, stderr = run_command(module, argv, cwd, logs)
    assert code == 2, stderr
    assert "Traceback" not in stderr and named in stderr, stderr
    assert list(cwd.iterdir()) == []  # nothing written here
    assert _snapshot(given) == before  # and no input added, removed or changed


def test_there_are_enough_cases():
    assert len(CASES) >= 40 and {_argv(c)[0] for c in CASES} >= {
        "inspect", "train", "evaluate", "profile", "latency-check", "search", "compare", "export", "quickstart",
        "bignas.latency.device"}


def test_search_budget_above_the_space_is_refused(inputs):
    space = load_space(inputs / "tiny.yaml")
    assert space.child_count() == 12  # 2 resolutions × stage 0 (depth 1: 2 blocks, depth 2: 2²) × 1
    rng = __import__("random").Random(0)
    assert len({space.sample(rng).hash for _ in range(2000)}) == 12
    problem = Problem(space)
    problem.check_budget(12)
    with pytest.raises(SearchError, match=r"--budget 13 exceeds the 12 distinct children of space 'tiny'"):
        problem.check_budget(13)
    Problem(load_space("ofa-mbv3")).check_budget(100_000)  # the CLI's largest budget fits a real space


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
