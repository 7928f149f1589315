"""The run directory and a trained run opened from it: layout, refusals, caller-chosen device."""

import dataclasses

import pytest
import torch
import yaml

from bignas.nn import Supernet
from bignas.space import parse_space
from bignas.train.checkpoint import CheckpointError
from bignas.train.config import TrainConfig
from bignas.train.distributed import DeviceError, pick_device
from bignas.train.run_dir import RunDir, RunError, TrainedRun
from test_latency import TINY_SPACE
from test_train import write_cifar10


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as `bignas train` leaves it, with untrained weights: a tiny space for
    10-class CIFAR data written to disk."""
    space = parse_space(yaml.safe_load(TINY_SPACE.replace("num_classes: 4", "num_classes: 10")), "tiny")
    data = write_cifar10(tmp_path / "cifar", n_train=64, n_test=32)
    config = TrainConfig(data=f"cifar10:{data}", device="cpu")
    run = RunDir(tmp_path / "run")
    run.create(config, space, {"spec": config.data}, world_size=1)
    torch.manual_seed(0)
    run.save_final(Supernet(space).state_dict(), space.hash)
    return run, space, data


def test_opened_run_has_the_saved_weights_on_the_callers_device(run_dir):
    run, space, _ = run_dir
    trained = TrainedRun.open(run.path, torch.device("cpu"))
    assert trained.space == space and trained.device == torch.device("cpu")
    assert not trained.supernet.training
    saved = torch.load(run.final_file, weights_only=True)["model"]
    for key, value in trained.supernet.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    top1, static = trained.evaluate(space.min(), trained.dataset(), "test")
    assert 0 <= top1 <= 1 and sum(p.numel() for p in static.parameters()) > 0


def test_a_finished_run_is_not_overwritten(run_dir):
    run, space, _ = run_dir
    before = run.final_file.read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        run.create(TrainConfig(), space, {}, world_size=1)
    assert run.final_file.read_bytes() == before


def test_refusals_name_the_file(run_dir, tmp_path):
    run, space, data = run_dir
    with pytest.raises(RunError, match="run.json"):
        TrainedRun.open(tmp_path / "nowhere", torch.device("cpu"))
    trained = TrainedRun.open(run.path, torch.device("cpu"))
    other = dataclasses.replace(space, num_classes=4)
    run.save_final(Supernet(other).state_dict(), other.hash)
    with pytest.raises(CheckpointError, match="space_hash"):
        TrainedRun.open(run.path, torch.device("cpu"))
    run.final_file.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match="supernet.pt"):
        TrainedRun.open(run.path, torch.device("cpu"))
    run.final_file.unlink()
    with pytest.raises(RunError, match="no weights yet"):
        TrainedRun.open(run.path, torch.device("cpu"))
    assert trained.dataset(f"cifar10:{data}").num_classes == 10


def test_dataset_of_other_classes_is_refused(tmp_path):
    space = parse_space(yaml.safe_load(TINY_SPACE), "tiny")  # 4 classes
    run = RunDir(tmp_path / "run")
    run.create(TrainConfig(data="mnist5k", device="cpu"), space, {}, world_size=1)
    run.save_final(Supernet(space).state_dict(), space.hash)
    with pytest.raises(RunError, match="10 classes, but run .* was trained for 4"):
        TrainedRun.open(run.path, torch.device("cpu")).dataset()


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="expected one of auto, cpu, cuda"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            pick_device("cuda")


def test_resume_falls_back_past_a_checkpoint_cut_short(run_dir, capsys):
    run, space, _ = run_dir
    run.save_checkpoint(3, {"step": 3, "space_hash": space.hash}, keep=2)
    newest = run.save_checkpoint(6, {"step": 6, "space_hash": space.hash}, keep=2)
    newest.write_bytes(newest.read_bytes()[:200])  # a crash during its own write
    path, state = run.load_latest_checkpoint(space.hash)
    assert state["step"] == 3 and path.name == "step-00000003.pt"
    assert "step-00000006.pt" in capsys.readouterr().err
    path.write_bytes(b"")  # nothing intact left: refused, naming the oldest
    with pytest.raises(CheckpointError, match="step-00000003.pt"):
        run.load_latest_checkpoint(space.hash)


def test_temporaries_of_a_killed_write_are_removed(run_dir):
    run, space, _ = run_dir
    run.save_checkpoint(3, {"step": 3, "space_hash": space.hash}, keep=2)
    stale = [run.checkpoints / ".step-00000006.pt.x1y2.tmp", run.path / ".metrics.jsonl.abc.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    assert sorted(run.remove_temporaries()) == sorted(stale)
    assert not any(p.exists() for p in stale) and run.latest_checkpoint().name == "step-00000003.pt"
