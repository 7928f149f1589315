"""Training: configs, schedule, the sandwich step, checkpoints and exact resume."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from bignas.train.checkpoint import CheckpointError, load_checkpoint
from bignas.train.config import ConfigError, ScheduleConfig, check_resume, load_config, recipe_names
from bignas.train.recipe import Recipe
from bignas.train.run_dir import RunDir, RunError
from bignas.train.schedule import lr_factor
from conftest import assert_same_run, final_weights, train, write_cifar10


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_loads(name):
    cfg = load_config(name)
    assert cfg.epochs > 0 and cfg.batch_size > 0


def test_bad_configs_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("space: cifar-small\noptimiser: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown key 'optimiser'"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown key 'optimizer.learning_rate'"):
        load_config("quickstart.yaml", ["optimizer.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="'optimizer.name' = 'adam' is not one of"):
        load_config("quickstart.yaml", ["optimizer.name=adam"])
    with pytest.raises(ConfigError, match="'epochs' = 'ten' has the wrong type"):
        load_config("quickstart.yaml", ["epochs=ten"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("quickstart.yaml", ["epochs"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    # The recipe switches of the claim's ablations (tools/bench_claim.py)
    with pytest.raises(ConfigError, match="'sandwich.temperature'"):
        load_config("quickstart.yaml", ["sandwich.temperature=0"])
    with pytest.raises(ConfigError, match="'sandwich.distill_start_epochs'"):
        load_config("quickstart.yaml", ["sandwich.distill_start_epochs=-1"])
    with pytest.raises(ConfigError, match="'sandwich.distill_loss'"):
        load_config("quickstart.yaml", ["sandwich.distill_loss=js"])
    with pytest.raises(ConfigError, match="'sandwich.alpha_max'.*at least alpha_min"):
        load_config("quickstart.yaml", ["sandwich.alpha_min=1", "sandwich.alpha_max=-1"])
    with pytest.raises(ConfigError, match="'sandwich.alpha_clip'"):
        load_config("quickstart.yaml", ["sandwich.alpha_clip=0"])
    assert load_config("quickstart.yaml", ["sandwich.temperature=2", "sandwich.distill_start_epochs=0.5"]).sandwich \
        .temperature == 2.0
    with pytest.raises(ConfigError, match="'finetune.teacher' = 'smallest' is not one of"):
        load_config("quickstart.yaml", ["finetune.teacher=smallest"])
    assert load_config("quickstart.yaml", ["optimizer.lr=1e-3"]).optimizer.lr == 0.001  # YAML 1.1 reads a string


def test_schedule_warms_up_decays_and_ends_constant():
    cfg = ScheduleConfig(warmup_epochs=1, decay="cosine", floor=0.05)
    factors = [lr_factor(s, 10, 20, cfg) for s in range(200)]
    assert factors[0] < factors[5] < factors[9] <= 1.0
    assert max(factors) == pytest.approx(1.0, abs=1e-3)
    assert factors[-20:] == [0.05] * 20  # constant ending at 5% of the peak
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


@pytest.mark.parametrize("sampler", ["uniform", "best-up"])
def test_two_sandwich_steps_are_deterministic(tiny_config, tmp_path, sampler):
    runs = []
    for i in range(2):
        config = load_config(tiny_config, ["epochs=1", "eval.every_epochs=0", f"sandwich.sampler={sampler}"])
        recipe = Recipe(config, tmp_path / f"r{i}", show_progress=False)
        recipe.setup()
        recipe.steps_per_epoch = 2  # two steps are enough to compare
        recipe.train()
        runs.append(recipe.model.state_dict())
    for key in runs[0]:
        torch.testing.assert_close(runs[0][key], runs[1][key], atol=0, rtol=0)


def test_distillation_switches_change_what_the_other_children_learn(tiny_config, tmp_path):
    def two_steps(*overrides):
        recipe = Recipe(load_config(tiny_config, ["epochs=1", "eval.every_epochs=0", "sandwich.num_random=1",
                                                  *overrides]),
                        tmp_path / str(len(list(tmp_path.iterdir()))), show_progress=False)
        recipe.setup()
        recipe.train()  # one epoch
        return recipe.model.state_dict()

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    labels = two_steps("sandwich.distill=false")
    # Distillation starting after the first epoch: the whole epoch learns the labels.
    assert same(two_steps("sandwich.distill_start_epochs=1"), labels)
    distilled = two_steps()
    assert not same(distilled, labels)
    assert not same(two_steps("sandwich.temperature=4"), distilled)
    assert not same(two_steps("sandwich.distill_loss=alpha"), distilled)
    assert not same(two_steps("sandwich.sampler=best-up"), distilled)


def test_a_diverged_run_stops_before_it_logs_or_saves_anything_more(tiny_config, tmp_path):
    run = tmp_path / "run"
    recipe = Recipe(load_config(tiny_config, ["eval.every_epochs=0"]), run, show_progress=False)
    recipe.setup()
    at = recipe.steps_per_epoch + 1  # the second step of epoch 2: its forward pass overflows

    def overflow(module, inputs, output):
        return output * float("inf") if recipe.step == at else output
    recipe.model.register_forward_hook(overflow)
    every = recipe.cfg.checkpoint.every_steps
    kept = max(s for s in range(1, at + 1) if s % recipe.steps_per_epoch == 0 or s % every == 0)
    with pytest.raises(RunError, match=rf"not finite at step {at + 1} \(epoch 2 of 2\): loss_max, loss_min, weights; "
                                       rf"finite at step {at}, .*last checkpoint, step-{kept:08d}.pt, is intact"):
        recipe.train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == at and all(torch.tensor(r["loss_max"]).isfinite() for r in records)
    assert not (run / "supernet.pt").exists()
    latest = RunDir(run).latest_checkpoint()
    assert latest.name == f"step-{kept:08d}.pt"
    assert all(t.isfinite().all() for t in load_checkpoint(latest, recipe.space.hash)["model"].values()
               if t.is_floating_point())


def test_a_resume_with_another_number_of_processes_is_refused(tiny_config, tmp_path):
    run = tmp_path / "run"
    config = load_config(tiny_config, ["epochs=1", "eval.every_epochs=0"])
    recipe = Recipe(config, run, show_progress=False)
    recipe.setup()  # run.json: one process
    recipe.steps_per_epoch = 2
    recipe.train()  # a checkpoint to resume from
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "world_size": 2}))
    with pytest.raises(RunError, match=r"run.json: field 'world_size' is 2, but this resume runs 1 process"):
        Recipe(config, run, show_progress=False).setup(resume=True)


def test_resume_after_kill_continues_exactly(tiny_config, tmp_path):
    straight = train(tiny_config, tmp_path / "straight")
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err

    run = tmp_path / "killed"
    proc = train(tiny_config, run)
    deadline = time.time() + 300
    while not list((run / "checkpoints").glob("step-0000000[4-9].pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "supernet.pt").exists()  # really stopped before the end
    resumed = train(tiny_config, run, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err

    assert_same_run(run, tmp_path / "straight")
    assert len(list((run / "checkpoints").glob("*.pt"))) == 2  # the last two are kept


def test_refusals(tiny_config, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RunError, match="no checkpoint to resume"):
        recipe = Recipe(load_config(tiny_config), run, show_progress=False)
        recipe.setup(resume=True)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(CheckpointError, match="not a bignas checkpoint"):
        load_checkpoint(bad)
    proc = subprocess.run([sys.executable, "-m", "bignas", "train", "--config", str(tiny_config),
                           "--data", f"cifar10:{tmp_path / 'nowhere'}", "--out", str(run)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "nowhere" in proc.stderr


@pytest.mark.parametrize("sampler", ["uniform", "best-up"])
def test_two_process_gloo_run_matches_one_process_over_the_same_global_batch(tiny_config, tmp_path, sampler):
    """torchrun with 2 CPU processes (gloo, synchronised BN) and batch 16 each vs one process with
    batch 32: same children (seeded by step), same images, same gradients up to float summation
    order. Tolerance 1e-3 absolute on every weight after 9 steps at lr 0.2 with momentum: the
    synchronised BN sums moments (E[x^2] - E[x]^2) where one process's BN takes two passes, and
    momentum carries those 1e-6 differences forward (measured: 2e-4 at most). BN running
    statistics, which sum such differences over every step, within 1% relative. Dropout and drop-connect are
    off: their masks are drawn per process, so they cannot match a single process's. With best-up
    sampling, each process ranks the candidates on its half of the batch and the averaged losses
    must pick the children one process picks on the whole batch."""
    common = ["--config", str(tiny_config), "--quiet", "epochs=1", "eval.every_epochs=0",
              "model.dropout=0", "model.drop_connect=0", f"sandwich.sampler={sampler}"]
    single = subprocess.run([sys.executable, "-m", "bignas", "train", "--out", str(tmp_path / "one"),
                             *common, "batch_size=32"], capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_port=29517", "-m", "bignas", "train", "--out", str(tmp_path / "two"),
                          *common, "batch_size=16"], capture_output=True, text=True, timeout=900)
    assert ddp.returncode == 0, ddp.stderr
    assert json.loads(ddp.stdout.strip().splitlines()[-1])["steps"] == 9
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for key in a:
        rtol = 1e-2 if "running_" in key else 0
        torch.testing.assert_close(b[key].float(), a[key].float(), atol=1e-3, rtol=rtol)


def test_resume_refuses_changes_to_the_trajectory(tiny_config, tmp_path):
    run = tmp_path / "run"
    recipe = Recipe(load_config(tiny_config), run, show_progress=False)
    recipe.setup()
    recipe.save()  # a checkpoint at step 0 is enough to resume from
    saved = (run / "config.yaml").read_text()
    for change in (["seed=4"], ["batch_size=16", "optimizer.lr=0.3"], ["sandwich.num_random=1"]):
        with pytest.raises(ConfigError, match="--resume cannot change " + change[0].split("=")[0]) as e:
            Recipe(load_config(run / "config.yaml", change), run, show_progress=False).setup(resume=True)
        assert all(c.split("=")[0] in str(e.value) for c in change)
        assert (run / "config.yaml").read_text() == saved
    resumed = Recipe(load_config(run / "config.yaml", ["epochs=3", "log.every_steps=2"]), run, show_progress=False)
    resumed.setup(resume=True)
    assert load_config(run / "config.yaml").epochs == 3  # the allowed change is recorded
    proc = subprocess.run([sys.executable, "-m", "bignas", "train", "--config", str(tiny_config), "--out", str(run),
                           "--resume"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--config" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_saved_before_new_config_keys_resumes(tiny_config, tmp_path):
    """A checkpoint written before a config key existed reads it as its default, which does what
    the run did then: no change to refuse."""
    run = tmp_path / "run"
    recipe = Recipe(load_config(tiny_config), run, show_progress=False)
    recipe.setup()
    recipe.save()
    path = RunDir(run).latest_checkpoint()
    state = torch.load(path, weights_only=True)
    del state["config"]["sandwich"]["temperature"], state["config"]["finetune"]
    torch.save(state, path)
    saved = (run / "config.yaml").read_text()
    assert check_resume(state["config"], load_config(run / "config.yaml"), str(path)) == {}
    resumed = Recipe(load_config(run / "config.yaml"), run, show_progress=False)
    resumed.setup(resume=True)
    assert resumed.step == recipe.step and (run / "config.yaml").read_text() == saved


def test_a_finished_run_is_never_trained_over(tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "supernet.pt").write_bytes(b"the weights of an earlier run")
    with pytest.raises(RunError, match="already holds a run .*supernet.pt"):
        Recipe(load_config(tiny_config), run, show_progress=False).setup()
    assert sorted(p.name for p in run.iterdir()) == ["supernet.pt"]


def test_flag_values_are_not_parsed_as_yaml_and_bad_overrides_are_named(tiny_config, tmp_path):
    assert load_config(tiny_config, values={"data": "on", "epochs": 3}).data == "on"  # YAML would read True
    with pytest.raises(ConfigError, match="override 'optimizer.lr=\\[0.1': the value is not valid YAML"):
        load_config(tiny_config, ["optimizer.lr=[0.1"])
    with pytest.raises(ConfigError, match="epochs"):
        load_config(tiny_config, values={"epochs": 0})


def test_a_metrics_line_cut_by_a_kill_does_not_block_resume(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_file.write_text('{"kind": "step", "step": 1}\n{"kind": "step", "step": 3}\n{"kind": "st')
    run.truncate_metrics(2)
    assert run.metrics_file.read_text() == '{"kind": "step", "step": 1}\n'


def test_file_system_refusals_are_messages(tiny_config, tmp_path):
    (tmp_path / "file").write_text("")
    proc = subprocess.run([sys.executable, "-m", "bignas", "train", "--config", str(tiny_config),
                           "--out", str(tmp_path / "file" / "run"), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "file" in proc.stderr, proc.stderr


def test_a_changed_dataset_is_refused_on_resume(tiny_config, tmp_path):
    data = write_cifar10(tmp_path / "cifar")
    config = load_config(tiny_config, values={"data": f"cifar10:{data}"})
    run = tmp_path / "run"
    recipe = Recipe(config, run, show_progress=False)
    recipe.setup()
    recipe.save()
    assert json.loads((run / "run.json").read_text())["data"]["fingerprint"] == recipe.dataset.fingerprint
    write_cifar10(data, seed=1)  # other images behind the same spec
    with pytest.raises(RunError, match="data_fingerprint.*the dataset changed"):
        Recipe(load_config(run / "config.yaml"), run, show_progress=False).setup(resume=True)
    write_cifar10(data)  # the original images again: resumable
    Recipe(load_config(run / "config.yaml"), run, show_progress=False).setup(resume=True)
