"""One child trained alone (`train --arch`) and fine-tuned from a supernet (`finetune`)."""

import json
import random
import shutil

import pytest
import torch

from bignas.child_file import read_child
from bignas.cli import main
from bignas.cost import child_cost
from bignas.data import resize_batch
from bignas.nn import StaticNet, Supernet, embed, extract
from bignas.plan import plan
from bignas.space import load_space
from bignas.train.child import FINETUNE_LR_SCALE, ChildRecipe, Finetune, finetune_config
from bignas.train.config import load_config
from bignas.train.recipe import Recipe, train_run
from bignas.train.run_dir import RunDir, RunError, TrainedRun
from conftest import make_random_supernet, metric_records

SPACE = load_space("cifar-small")


def arch_file(tmp_path, child, name="arch.json"):
    path = tmp_path / name
    path.write_text(json.dumps(child.to_dict(SPACE)))
    return path


@pytest.fixture(scope="module")
def supernet_run(tiny_config, tmp_path_factory):
    run = tmp_path_factory.mktemp("supernet") / "run"
    train_run(Recipe(load_config(tiny_config, ["epochs=1", "eval.every_epochs=0"]), run, show_progress=False))
    return run


def test_embed_is_the_inverse_of_extract():
    source = make_random_supernet("cifar-small")
    child = SPACE.sample(random.Random(4))
    target = Supernet(SPACE).eval()
    embed(target, child, extract(source, child).state_dict())
    x = torch.randn(2, 3, child.resolution, child.resolution)
    torch.testing.assert_close(target(x, child), source(x, child))
    with pytest.raises(KeyError, match="not those of this child"):
        embed(target, SPACE.max(), extract(source, child).state_dict())


def test_train_arch_trains_exactly_one_static_child_deterministically(tiny_config, tmp_path, capsys):
    child = SPACE.sample(random.Random(1))
    arch = arch_file(tmp_path, child)
    weights = []
    for name in ("a", "b"):
        assert main(["train", "--config", str(tiny_config), "--arch", str(arch), "--out", str(tmp_path / name),
                     "--epochs", "1", "--quiet"]) == 0
        space, saved, state = read_child(tmp_path / name / "child.pt")
        assert saved == child and space.hash == SPACE.hash
        weights.append(state)
    # Exactly the child's parameters, as the analytic count has them (BN included).
    model = StaticNet(plan(SPACE, child))
    model.load_state_dict(weights[0])
    assert sum(p.numel() for p in model.parameters()) == child_cost(SPACE, child).params
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], atol=0, rtol=0)
    assert not (tmp_path / "a" / "supernet.pt").exists()
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    assert meta["training"] == {"kind": "alone"} and meta["arch"] == child.to_dict(SPACE)
    # Evaluate takes the run, for that child only; its top-1 is the one the last epoch logged.
    capsys.readouterr()
    assert main(["evaluate", "--run", str(tmp_path / "a"), "--arch", str(arch)]) == 0
    logged = [r["top1"] for r in metric_records(tmp_path / "a") if r.get("kind") == "epoch"]
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(logged[-1], abs=1e-6) and result["calibration_images"] == 64
    # --calibration-images: the run's own count given explicitly changes nothing; more images than the
    # training split holds means all of them, and the output says how many were used.
    train_images = len(TrainedRun.open(tmp_path / "a", torch.device("cpu")).dataset().train)
    for n, used in ((64, 64), (10**6, train_images)):
        assert main(["evaluate", "--run", str(tmp_path / "a"), "--arch", str(arch),
                     "--calibration-images", str(n)]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["calibration_images"] == used and (n != 64 or again["top1"] == result["top1"])
    assert main(["evaluate", "--run", str(tmp_path / "a"), "--arch", "max"]) == 2


def test_train_arch_refuses_an_arch_of_another_space(tiny_config, tmp_path, capsys):
    other = load_space("ofa-mbv3")
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other.max().to_dict(other)))
    assert main(["train", "--config", str(tiny_config), "--arch", str(path), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 2
    assert str(path) in capsys.readouterr().err and not (tmp_path / "r" / "run.json").exists()


def test_finetune_starts_from_the_sliced_child(supernet_run, tmp_path):
    child = SPACE.sample(random.Random(2))
    config = finetune_config(supernet_run, epochs=1)
    assert config.schedule.warmup_epochs == 0 and config.model.dropout == 0
    assert config.optimizer.lr == pytest.approx(load_config(supernet_run / "config.yaml").optimizer.lr * FINETUNE_LR_SCALE)
    recipe = ChildRecipe(config, tmp_path / "ft", child.to_dict(SPACE), Finetune(supernet_run), show_progress=False)
    recipe.setup()
    trained = TrainedRun.open(supernet_run, torch.device("cpu"))
    sliced = extract(trained.supernet, child).train()
    images, _ = next(iter(recipe.dataset.train.train_batches(8, seed=0, epoch=0)))
    x = resize_batch(images, child.resolution)
    # Its BN statistics were recalibrated: in eval mode it is the child `evaluate` measures,
    _, static = trained.evaluate(child, recipe.dataset)
    recipe.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(recipe.model(x), static(x))
    # and its first training step's output (BN in training mode: batch statistics) is the sliced child's.
    recipe.model.train()
    with torch.no_grad():
        torch.testing.assert_close(recipe.model(x), sliced(x))


@pytest.mark.parametrize("teacher", ["largest", "none"])  # none: resumed from its checkpoint alone
def test_finetune_resumes_exactly_and_exports_with_its_history(supernet_run, tmp_path, capsys, teacher):
    arch = arch_file(tmp_path, SPACE.min())
    run = tmp_path / "ft"
    assert main(["finetune", "--run", str(supernet_run), "--arch", "min", "--epochs", "2", "--out", str(run),
                 "--teacher", teacher, "--quiet", "checkpoint.every_steps=4", "checkpoint.keep=10", "log.every_steps=1"]) == 0
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    # Back to a checkpoint in the middle of the first epoch, as if killed there.
    checkpoints = RunDir(run).checkpoints
    for path in sorted(checkpoints.iterdir())[1:]:
        path.unlink()
    (run / "child.pt").unlink()
    capsys.readouterr()
    assert main(["finetune", "--resume", "--out", str(run), "--quiet"]) == 0
    a, b = read_child(reference / "child.pt")[2], read_child(run / "child.pt")[2]
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
    assert metric_records(run) == metric_records(reference)
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--arch", str(arch), "--out", str(tmp_path / "x")]) == 0
    card = json.loads((tmp_path / "x" / "card.json").read_text())
    assert card["training"]["kind"] == "finetuned" and card["training"]["epochs"] == 2
    assert card["training"]["from"] == str(supernet_run.resolve()) and card["training"]["teacher"] == teacher


def test_finetune_refuses_what_it_cannot_continue(supernet_run, tiny_config, tmp_path, capsys):
    other = load_space("ofa-mbv3")
    wrong = tmp_path / "other.json"
    wrong.write_text(json.dumps(other.max().to_dict(other)))
    assert main(["finetune", "--run", str(supernet_run), "--arch", str(wrong), "--epochs", "1",
                 "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert str(wrong) in capsys.readouterr().err and not (tmp_path / "a" / "run.json").exists()
    assert main(["finetune", "--out", str(tmp_path / "b"), "--epochs", "1"]) == 2
    assert "--run, --arch needed" in capsys.readouterr().err
    assert main(["finetune", "--out", str(tmp_path / "b"), "--resume", "--teacher", "largest"]) == 2
    assert "--teacher: not with --resume" in capsys.readouterr().err
    # A run of one child is not a supernet: nothing to fine-tune from, nothing to search.
    arch = arch_file(tmp_path, SPACE.min())
    assert main(["train", "--config", str(tiny_config), "--arch", str(arch), "--out", str(tmp_path / "alone"),
                 "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--run", str(tmp_path / "alone"), "--arch", str(arch), "--epochs", "1",
                 "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "not a supernet" in capsys.readouterr().err
    # Resuming after the supernet's weights changed: the teacher would differ, so it is refused
    # (fine-tuning on the labels needs nothing but its own checkpoint).
    source = tmp_path / "source"
    shutil.copytree(supernet_run, source)
    assert main(["finetune", "--run", str(source), "--arch", str(arch), "--epochs", "1", "--out",
                 str(tmp_path / "d"), "--teacher", "largest", "--quiet", "checkpoint.every_steps=4"]) == 0
    state = torch.load(source / "supernet.pt", weights_only=True)
    state["model"]["head.classifier.bias"] += 1
    torch.save(state, source / "supernet.pt")
    with pytest.raises(RunError, match="weights changed since this fine-tuning began"):
        ChildRecipe(load_config(tmp_path / "d" / "config.yaml", ["epochs=2"]), tmp_path / "d", None,
                    show_progress=False).setup(resume=True)
