"""Experiment recipes: parsing, the commands a run becomes, prepare steps, resuming, the results
table, and the shipped recipes (every run's settings form a valid training config)."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest
import yaml

from weakseg.engine.config import ConfigError, apply_overrides, load_config
from weakseg.recipes.experiments import (
    eval_command,
    format_results,
    load_experiment,
    prepare_commands,
    run_experiment,
    train_command,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "experiments").glob("*.yaml"))


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


RECIPE = {
    "title": "Tiny",
    "description": "two runs",
    "defaults": {"max_iterations": 2, "data_root": "/data"},
    "evaluations": [{"name": "plain", "label": "net"}, {"name": "crf", "args": ["--crf"]}],
    "metrics": ["mean_dice", "miou"],
    "runs": [
        {"name": "a", "label": "pCE", "config": "base.yaml"},
        {
            "name": "b",
            "label": "pCE + NC",
            "config": "base.yaml",
            "set": {"losses": {"normalized_cut": {"weight": 0.5}}, "max_iterations": 3},
        },
    ],
}


def test_load_experiment(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE))
    assert experiment.title == "Tiny"
    assert [run.name for run in experiment.runs] == ["a", "b"]
    assert experiment.runs[1].overrides["max_iterations"] == 3
    assert [e.args for e in experiment.evaluations] == [(), ("--crf",)]
    assert experiment.select(["b"]).runs == experiment.runs[1:]
    with pytest.raises(ConfigError, match=r"unknown run\(s\) \['c'\]"):
        experiment.select(["c"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runs": []}, "non-empty list 'runs'"),
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
        ({"runs": [{"name": "a", "config": "x.yaml"}] * 2}, "must be unique"),
        ({"runs": [{"name": "a"}]}, r"needs a 'config' path"),
        ({"runs": [{"name": "a/b", "config": "x.yaml"}]}, "without '/'"),
        ({"runs": [{"name": "a", "config": "x.yaml", "sett": {}}]}, r"\['sett'\] in runs\[0\]"),
        ({"evaluations": [{"name": "e", "args": "--crf"}]}, "list of strings"),
        ({"evaluations": [{"name": "e", "checkpoint": "best"}]}, "must be a .pth file name"),
        ({"evaluations": [{"name": "e", "checkpoint": "../x.pth"}]}, r"got '\.\./x\.pth'"),
    ],
)
def test_load_experiment_errors(tmp_path, change, message) -> None:
    path = _write(tmp_path / "bad.yaml", {**RECIPE, **change})
    with pytest.raises(ConfigError, match=message) as error:
        load_experiment(path)
    assert str(path) in str(error.value)


def test_missing_recipe(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_experiment(tmp_path / "nope.yaml")


def test_train_command_orders_overrides(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE))
    command = train_command(experiment.runs[1], experiment, tmp_path / "out", ["data_root=/d2"])
    assert command[:3] == ["train", "--config", "base.yaml"]
    sets = command[4::2]
    assert command[3::2] == ["--set"] * len(sets)
    # the recipe's data_root is dropped for the one given on the command line
    assert sets == [
        "max_iterations=3",
        "losses={normalized_cut: {weight: 0.5}}",
        "data_root=/d2",
        f"output_dir={tmp_path / 'out' / 'b'}",
        "resume=auto",
    ]
    # each --set parses back to the value of the recipe
    values = apply_overrides({}, sets)
    assert values["losses"] == {"normalized_cut": {"weight": 0.5}}
    assert values["max_iterations"] == 3
    evaluation = experiment.evaluations[1]
    assert eval_command(experiment.runs[0], evaluation, tmp_path) == [
        "eval",
        str(tmp_path / "a" / "checkpoint.pth"),
        "--crf",
        "--output",
        str(tmp_path / "a" / "eval_crf.json"),
    ]


class FakeWeakseg:
    """Stands in for the subprocess: 'trains' (writes a checkpoint) and 'evaluates' (a report)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.launchers: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, arguments: list[str], launcher=()) -> int:
        self.calls.append(arguments)
        self.launchers.append(list(launcher))
        if arguments[0] == "train":
            output = Path(next(a for a in arguments if a.startswith("output_dir=")).split("=")[1])
            if output.name == self.fail_on:
                return 3
            output.mkdir(parents=True, exist_ok=True)
            (output / "checkpoint.pth").write_bytes(b"weights")
        else:
            run = Path(arguments[1]).parent.name
            crf = "--crf" in arguments
            report = {"mean_dice": 0.5 + 0.1 * crf + 0.01 * (run == "b"), "miou": 0.25}
            Path(arguments[-1]).write_text(json.dumps(report))
        return 0


def test_run_experiment_writes_table_and_skips_done_evaluations(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE))
    fake = FakeWeakseg()
    results = run_experiment(experiment, tmp_path / "out", executor=fake)
    assert [c[0] for c in fake.calls] == ["train", "eval", "eval"] * 2
    text = results.read_text()
    assert "| pCE | 0.500 | 0.250 | 0.600 | 0.250 |" in text
    assert "| pCE + NC | 0.510 | 0.250 | 0.610 | 0.250 |" in text
    assert "mean Dice (fg), net" in text and "mIoU, crf" in text
    # the commands section holds exactly what ran, runnable in a shell
    shown = [line for line in text.splitlines() if line.startswith("weakseg ")]
    assert [shlex.split(line)[1:] for line in shown] == fake.calls

    # a second call trains again (resume=auto makes that a no-op) but evaluates nothing
    again = FakeWeakseg()
    # the fake rewrites the checkpoint, so make the reports newer than it
    run_experiment(experiment, tmp_path / "out", executor=_keep_checkpoint_time(again))
    assert [c[0] for c in again.calls] == ["train", "train"]


def _keep_checkpoint_time(fake: FakeWeakseg):
    def execute(arguments: list[str], launcher=()) -> int:
        if arguments[0] == "train":
            fake.calls.append(arguments)  # a finished run: resume=auto leaves it as it is
            return 0
        return fake(arguments, launcher)

    return execute


def test_evaluation_of_another_checkpoint(tmp_path) -> None:
    recipe = {
        **RECIPE,
        "evaluations": [
            {"name": "plain", "label": "final"},
            {"name": "best", "label": "best", "checkpoint": "best.pth", "args": ["--crf"]},
        ],
    }
    experiment = load_experiment(_write(tmp_path / "r.yaml", recipe))
    out = tmp_path / "out"
    run = experiment.runs[0]
    assert eval_command(run, experiment.evaluations[1], out) == [
        "eval",
        str(out / "a" / "best.pth"),
        "--crf",
        "--output",
        str(out / "a" / "eval_best.json"),
    ]
    assert eval_command(run, experiment.evaluations[0], out)[1] == str(out / "a" / "checkpoint.pth")

    def train_with_best(arguments: list[str], launcher=()) -> int:
        status = fake(arguments, launcher)
        if arguments[0] == "train":
            output = Path(next(a for a in arguments if a.startswith("output_dir=")).split("=")[1])
            (output / "best.pth").write_bytes(b"best weights")
        return status

    fake = FakeWeakseg()
    run_experiment(experiment, out, executor=train_with_best)
    assert [c[1] for c in fake.calls if c[0] == "eval"] == [
        str(out / name / file) for name in ("a", "b") for file in ("checkpoint.pth", "best.pth")
    ]
    # a newer best.pth (and only it) makes its report stale
    fake.calls.clear()
    later = (out / "a" / "eval_best.json").stat().st_mtime + 10
    os.utime(out / "a" / "best.pth", (later, later))
    run_experiment(experiment, out, executor=_keep_checkpoint_time(fake))
    assert [c[1] for c in fake.calls if c[0] == "eval"] == [str(out / "a" / "best.pth")]


def test_stale_evaluation_is_redone(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE)).select(["a"])
    run_experiment(experiment, tmp_path / "out", executor=FakeWeakseg())
    checkpoint = tmp_path / "out" / "a" / "checkpoint.pth"
    later = time.time() + 10
    os.utime(checkpoint, (later, later))  # trained further after the reports were written
    fake = FakeWeakseg()
    run_experiment(experiment, tmp_path / "out", executor=_keep_checkpoint_time(fake))
    assert [c[0] for c in fake.calls] == ["train", "eval", "eval"]


def test_failure_names_the_run_and_keeps_finished_ones(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE))
    with pytest.raises(RuntimeError, match=r"run 'b': 'weakseg train .*' exited with status 3"):
        run_experiment(experiment, tmp_path / "out", executor=FakeWeakseg(fail_on="b"))
    assert (tmp_path / "out" / "a" / "eval_crf.json").is_file()
    assert not (tmp_path / "out" / "results.md").exists()


def test_dry_run_runs_nothing(tmp_path, capsys) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE))
    fake = FakeWeakseg()
    run_experiment(experiment, tmp_path / "out", dry_run=True, executor=fake)
    assert fake.calls == []
    assert not (tmp_path / "out").exists()
    assert capsys.readouterr().out.count("weakseg ") == 6


def test_launcher_starts_training_only(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE)).select(["a"])
    fake = FakeWeakseg()
    launcher = ["torchrun", "--nproc-per-node", "2"]
    results = run_experiment(experiment, tmp_path / "out", launcher=launcher, executor=fake)
    assert fake.launchers == [launcher, [], []]
    text = results.read_text()
    assert "\ntorchrun --nproc-per-node 2 -m weakseg train --config base.yaml" in text
    assert "\nweakseg eval " in text


def test_only_runs_some_but_tabulates_all(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE))
    fake = FakeWeakseg()
    results = run_experiment(experiment, tmp_path / "out", only=["b"], executor=fake)
    assert {Path(c[1]).parent.name for c in fake.calls if c[0] == "eval"} == {"b"}
    text = results.read_text()
    assert "| pCE | - | - | - | - |" in text
    assert "| pCE + NC | 0.510 | 0.250 | 0.610 | 0.250 |" in text
    assert "output_dir=" + str(tmp_path / "out" / "a") in text  # a's commands are listed too
    with pytest.raises(ConfigError, match="unknown run"):
        run_experiment(experiment, tmp_path / "out", only=["zz"], executor=fake)


def test_missing_reports_show_as_dash(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", RECIPE))
    text = format_results(experiment, tmp_path, [])
    assert "| pCE | - | - | - | - |" in text


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.stem for path in RECIPES])
def test_shipped_recipes_are_valid_configs(recipe, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # recipe paths are relative to the repository root
    experiment = load_experiment(recipe)
    for run in experiment.runs:
        command = train_command(run, experiment, Path("runs/x"))
        config = load_config(command[2], command[4::2])
        assert config.output_dir == f"runs/x/{run.name}"
        assert config.max_iterations is None or config.max_iterations > 0
    assert len({run.name for run in experiment.runs}) == len(experiment.runs)


def test_shipped_recipes_exist() -> None:
    names = {path.stem for path in RECIPES}
    assert {"acdc_table1", "acdc_fig5"} <= names


PREPARED = {
    "title": "Prepared",
    "defaults": {"max_iterations": 2},
    "runs": [
        {
            "name": "grabcut",
            "label": "GrabCut",
            "config": "base.yaml",
            "set": {"label_dir": "{run_dir}/masks"},
            "prepare": [
                "weakseg scribbles stats '{output}/a b'",  # a string, with its program
                {
                    "command": ["proposals", "grabcut", "--config", "{config}", "{settings}"],
                    "creates": "{run_dir}/masks",
                },
            ],
        }
    ],
}


def test_prepare_commands_fill_placeholders(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", PREPARED))
    run = experiment.runs[0]
    out = tmp_path / "out"
    (stats, stats_creates), (grabcut, creates) = prepare_commands(run, experiment, out, ["seed=3"])
    assert stats == ["scribbles", "stats", f"{out}/a b"] and stats_creates is None
    # {settings}: the training's --set arguments, the runner's own included
    sets = ["max_iterations=2", f"label_dir={out}/grabcut/masks", "seed=3"]
    assert grabcut == ["proposals", "grabcut", "--config", "base.yaml"] + [
        arg for item in sets for arg in ("--set", item)
    ]
    assert creates == out / "grabcut" / "masks"
    assert f"label_dir={out}/grabcut/masks" in train_command(run, experiment, out)
    # other braces are left alone
    braces = {**PREPARED, "defaults": {"losses": {"dense_crf": {"weight": 1}}}}
    experiment = load_experiment(_write(tmp_path / "b.yaml", braces))
    assert "losses={dense_crf: {weight: 1}}" in train_command(experiment.runs[0], experiment, out)


def _prepared(prepare) -> dict:
    return {**PREPARED, "runs": [{"name": "r", "config": "c.yaml", "prepare": prepare}]}


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        ("proposals grabcut", r"prepare must be a list of commands"),
        ([5], r"prepare\[0\] must be a command: a string or a list of strings, got 5"),
        ([["proposals", None]], r"prepare\[0\] must be a command"),
        ([""], r"prepare\[0\] is an empty command"),
        (["weakseg"], r"prepare\[0\] is an empty command"),
        (["proposals 'grabcut"], r"prepare\[0\] cannot be split into arguments"),
        ([{"creates": "x"}], r"prepare\[0\] needs a 'command'"),
        ([{"command": "a", "when": 1}], r"unknown key\(s\) \['when'\] in .*prepare\[0\]"),
        ([{"command": "a", "creates": 3}], r"prepare\[0\]\.creates must be a path, got 3"),
        ([{"command": {"a": 1}}], r"prepare\[0\]\.command must be a command"),
    ],
)
def test_prepare_errors_name_the_recipe_and_run(tmp_path, prepare, message) -> None:
    path = _write(tmp_path / "bad.yaml", _prepared(prepare))
    with pytest.raises(ConfigError, match=message) as error:
        load_experiment(path)
    assert f"runs[0] (r) in {path}" in str(error.value)


class FakeWithProposals(FakeWeakseg):
    """:class:`FakeWeakseg` that also runs ``proposals`` (writes the folder of its ``label_dir``)
    and ``scribbles`` (does nothing)."""

    def __init__(self, fail_on: str | None = None, create: bool = True) -> None:
        super().__init__(fail_on)
        self.create = create

    def __call__(self, arguments: list[str], launcher=()) -> int:
        if arguments[0] == "proposals":
            self.calls.append(arguments)
            if self.fail_on == "proposals":
                return 2
            folder = next(a for a in arguments if a.startswith("label_dir=")).split("=")[1]
            if self.create:
                Path(folder).mkdir(parents=True, exist_ok=True)
            return 0
        if arguments[0] == "scribbles":
            self.calls.append(arguments)
            return 0
        return super().__call__(arguments, launcher)


def test_prepare_runs_before_training_once(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", PREPARED))
    out = tmp_path / "out"
    fake = FakeWithProposals()
    results = run_experiment(experiment, out, executor=fake)
    assert [c[0] for c in fake.calls] == ["scribbles", "proposals", "train", "eval"]
    assert (out / "grabcut" / "masks").is_dir()
    assert not list((out / "grabcut").glob(".prepare-*"))
    shown = [line for line in results.read_text().splitlines() if line.startswith("weakseg ")]
    assert [shlex.split(line)[1:] for line in shown] == fake.calls
    # again: the step whose output exists is skipped, the one without 'creates' runs
    again = FakeWithProposals()
    run_experiment(experiment, out, executor=_keep_checkpoint_time(again))
    assert [c[0] for c in again.calls] == ["scribbles", "train"]
    assert "weakseg proposals grabcut" in results.read_text()  # still listed


def test_interrupted_prepare_step_is_redone(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", PREPARED))
    out = tmp_path / "out"
    (out / "grabcut" / "masks").mkdir(parents=True)  # half written when the run stopped
    (out / "grabcut" / ".prepare-1.running").touch()
    fake = FakeWithProposals()
    run_experiment(experiment, out, executor=fake)
    assert [c[0] for c in fake.calls] == ["scribbles", "proposals", "train", "eval"]
    assert not (out / "grabcut" / ".prepare-1.running").exists()


def test_prepare_failures(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", PREPARED))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"run 'grabcut': 'weakseg proposals .*' exited with "):
        run_experiment(experiment, out, executor=FakeWithProposals(fail_on="proposals"))
    assert (out / "grabcut" / ".prepare-1.running").exists()  # not done: the next call redoes it
    with pytest.raises(RuntimeError, match=r"succeeded but did not create .*grabcut/masks"):
        run_experiment(experiment, out, executor=FakeWithProposals(create=False))
    assert not (out / "grabcut" / "checkpoint.pth").exists()  # no training on missing labels


def test_dry_run_prints_prepare_steps(tmp_path, capsys) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", PREPARED))
    fake = FakeWithProposals()
    run_experiment(experiment, tmp_path / "out", dry_run=True, executor=fake)
    printed = capsys.readouterr().out.splitlines()
    assert fake.calls == [] and not (tmp_path / "out").exists()
    assert [shlex.split(line)[1] for line in printed] == ["scribbles", "proposals", "train", "eval"]


def test_timing_column_reads_metrics_jsonl(tmp_path) -> None:
    experiment = load_experiment(_write(tmp_path / "r.yaml", {**RECIPE, "timing": True}))
    assert experiment.timing and not load_experiment(_write(tmp_path / "s.yaml", RECIPE)).timing
    (tmp_path / "a").mkdir()
    records = [{"iteration": 4, "time": 2.0}, {"iteration": 10, "time": 3.5}]
    (tmp_path / "a" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = format_results(experiment, tmp_path, [])
    assert (
        "| mean Dice (fg), net | mIoU, net | mean Dice (fg), crf | mIoU, crf | train s/iter |"
        in text
    )
    assert "| pCE | - | - | - | - | 0.55 |" in text  # (2.0 + 3.5) s / 10 iterations
    assert "| pCE + NC | - | - | - | - | - |" in text  # not trained yet
    with pytest.raises(ConfigError, match=r"'timing' in .* must be true or false, got 'yes'"):
        load_experiment(_write(tmp_path / "t.yaml", {**RECIPE, "timing": "yes"}))
