"""The paper's tables and figures as runnable recipes: ``weakseg experiment RECIPE.yaml``.

A recipe (``configs/experiments/*.yaml``, read with ``yaml.safe_load``) lists training runs that
differ in one thing (the loss, the scribble length, the supervision), the evaluations to run on
each trained network, and the settings every run shares::

    title: "Table 1 (small scale): regularized losses on ACDC scribbles"
    description: "..."                 # what the table reproduces and how it differs from the paper
    defaults:                          # --set overrides applied to every run
      data_root: ../shared/data/acdc-scribble
      max_iterations: 600
    evaluations:                       # one column group per entry
      - {name: plain, label: "network"}
      - {name: crf, label: "+ dense CRF post-processing", args: [--crf]}
      - {name: best, label: "best.pth", checkpoint: best.pth}   # default: checkpoint.pth
    metrics: [mean_dice, miou]         # keys of the evaluation report
    timing: true                       # optional: a "train s/iter" column (from metrics.jsonl)
    runs:
      - {name: pce, label: "pCE only", config: configs/acdc_unet_pce.yaml}
      - name: normalized_cut
        label: "pCE + normalized cut"
        config: configs/acdc_unet_pce.yaml
        set: {losses: {normalized_cut: {weight: 0.5, sigma_rgb: 15, sigma_xy: 40}}}

For every run the runner executes its ``prepare`` commands (below), then ``weakseg train --config
CONFIG --set ...`` into ``OUTPUT/<run name>`` with ``resume=auto`` (a finished run is not trained
again, an interrupted one continues from its last checkpoint), then ``weakseg eval`` of its final
checkpoint once per evaluation, or of the file named by the evaluation's ``checkpoint`` in the
run's folder, e.g. ``best.pth`` (skipped when that report is newer than the checkpoint). Each step
is a separate process, so one run's failure or interruption leaves the finished ones intact. When
all runs are done it writes ``OUTPUT/results.md``: the table, then the exact commands that
produced it. Paths in a recipe (``config``) are relative to the current directory, like the
command line's.

A run may list ``prepare`` steps: ``weakseg`` commands (an argument list, or one string split as a
shell would; a leading ``weakseg`` is optional) that make what its training reads, e.g. the
one-time GrabCut masks of Table 2::

    - name: grabcut
      config: configs/synthetic_grabcut.yaml
      set: {label_dir: "{run_dir}/masks"}
      prepare:
        - command: [proposals, grabcut, --config, "{config}", "{settings}", --no-progress]
          creates: "{run_dir}/masks"

A step with ``creates: PATH`` is skipped when ``PATH`` exists, unless its last attempt stopped
midway (the runner keeps ``OUTPUT/<run>/.prepare-<i>.running`` while step ``i`` runs), and it
fails when its command succeeds without making ``PATH``; a step without ``creates`` runs every
time. Placeholders ``{output}`` (``OUTPUT``), ``{run_dir}`` (``OUTPUT/<run>``) and ``{config}``
(the run's ``config``) are replaced in prepare commands, in ``creates`` and in the strings of
``defaults`` and ``set``; a prepare-command argument ``{settings}`` becomes the run's ``--set``
arguments (those of its training but ``output_dir`` and ``resume``, the runner's own ``--set``
included), so that the step reads the same data as the training.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from weakseg import __version__
from weakseg.engine.config import ConfigError

__all__ = [
    "Evaluation",
    "Experiment",
    "ExperimentRun",
    "PrepareStep",
    "eval_command",
    "format_results",
    "load_experiment",
    "prepare_commands",
    "run_experiment",
    "settings_arguments",
    "train_command",
]

#: How the results table names the metrics of an evaluation report (``weakseg eval -o``).
METRIC_LABELS: dict[str, str] = {
    "mean_dice": "mean Dice (fg)",
    "miou": "mIoU",
    "pixel_accuracy": "pixel acc.",
}


#: The prepare-command argument that stands for the run's ``--set`` arguments.
SETTINGS_PLACEHOLDER = "{settings}"


@dataclasses.dataclass(frozen=True)
class PrepareStep:
    """A command run before a run's training: ``weakseg`` arguments (without the program, with
    placeholders) and the path whose existence means it is done (``None``: run it every time)."""

    arguments: tuple[str, ...]
    creates: str | None = None


@dataclasses.dataclass(frozen=True)
class ExperimentRun:
    """One training of a recipe: its folder name, table label, base config, overrides and the
    steps that prepare its data."""

    name: str
    label: str
    config: str
    overrides: dict[str, Any]
    prepare: tuple[PrepareStep, ...] = ()


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One evaluation of every trained network: report name, column label, ``weakseg eval`` args
    and the checkpoint file it evaluates in each run's folder."""

    name: str
    label: str
    args: tuple[str, ...]
    checkpoint: str = "checkpoint.pth"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A parsed recipe; see the module docstring for the YAML layout."""

    title: str
    description: str
    defaults: dict[str, Any]
    evaluations: tuple[Evaluation, ...]
    metrics: tuple[str, ...]
    runs: tuple[ExperimentRun, ...]
    timing: bool = False  # a column of training seconds per iteration

    def select(self, names: Sequence[str]) -> Experiment:
        """The same recipe restricted to the runs called ``names`` (in recipe order)."""
        known = [run.name for run in self.runs]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(f"unknown run(s) {unknown}; this recipe has {known}")
        runs = tuple(run for run in self.runs if run.name in names)
        return dataclasses.replace(self, runs=runs)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {value!r}")
    return dict(value)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "/\\ "):
        raise ConfigError(
            f"{what} must be a non-empty name without '/', '\\' or spaces, got {value!r}"
        )
    return value


def _prepare_arguments(value: Any, what: str) -> tuple[str, ...]:
    """The ``weakseg`` arguments of a prepare command: a string split as a shell would, or a
    list of strings and numbers; without a leading ``weakseg``."""
    if isinstance(value, str):
        try:
            arguments = shlex.split(value)
        except ValueError as error:
            raise ConfigError(f"{what} cannot be split into arguments: {error}") from error
    elif isinstance(value, list) and all(
        isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in value
    ):
        arguments = [str(a) for a in value]
    else:
        raise ConfigError(f"{what} must be a command: a string or a list of strings, got {value!r}")
    if arguments[:1] == ["weakseg"]:
        arguments = arguments[1:]
    if not arguments:
        raise ConfigError(f"{what} is an empty command; give a weakseg subcommand")
    return tuple(arguments)


def _prepare_steps(value: Any, what: str) -> tuple[PrepareStep, ...]:
    """The ``prepare`` list of a run: commands, or ``{command: ..., creates: PATH}`` mappings."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{what} must be a list of commands, got {value!r}")
    steps = []
    for index, entry in enumerate(value):
        where = f"{what}[{index}]"
        if not isinstance(entry, Mapping):
            steps.append(PrepareStep(_prepare_arguments(entry, where)))
            continue
        extra = sorted(set(entry) - {"command", "creates"})
        if extra:
            raise ConfigError(f"unknown key(s) {extra} in {where}; allowed: command, creates")
        if "command" not in entry:
            raise ConfigError(f"{where} needs a 'command'")
        creates = entry.get("creates")
        if creates is not None and (not isinstance(creates, str) or not creates):
            raise ConfigError(f"{where}.creates must be a path, got {creates!r}")
        steps.append(PrepareStep(_prepare_arguments(entry["command"], f"{where}.command"), creates))
    return tuple(steps)


def load_experiment(path: str | Path) -> Experiment:
    """Read and check a recipe file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: a missing or malformed entry, named with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    data = _mapping(data, f"{path}")
    allowed = {"title", "description", "defaults", "evaluations", "metrics", "runs", "timing"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {path}; allowed: {sorted(allowed)}")
    raw_runs = data.get("runs")
    if not isinstance(raw_runs, list) or not raw_runs:
        raise ConfigError(f"{path} needs a non-empty list 'runs'")
    runs = []
    for index, entry in enumerate(raw_runs):
        entry = _mapping(entry, f"runs[{index}] in {path}")
        extra = sorted(set(entry) - {"name", "label", "config", "set", "prepare"})
        if extra:
            raise ConfigError(f"unknown key(s) {extra} in runs[{index}] of {path}")
        name = _name(entry.get("name"), f"runs[{index}].name in {path}")
        if not isinstance(entry.get("config"), str):
            raise ConfigError(f"runs[{index}] ({name}) in {path} needs a 'config' path")
        label = str(entry.get("label", name))
        overrides = _mapping(entry.get("set"), f"runs[{index}].set in {path}")
        prepare = _prepare_steps(entry.get("prepare"), f"runs[{index}] ({name}) in {path}: prepare")
        runs.append(ExperimentRun(name, label, entry["config"], overrides, prepare))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names must be unique in {path}, got {names}")
    evaluations = []
    for index, entry in enumerate(data.get("evaluations") or [{"name": "plain"}]):
        entry = _mapping(entry, f"evaluations[{index}] in {path}")
        name = _name(entry.get("name"), f"evaluations[{index}].name in {path}")
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ConfigError(f"evaluations[{index}].args in {path} must be a list of strings")
        checkpoint = entry.get("checkpoint", "checkpoint.pth")
        if (
            not isinstance(checkpoint, str)
            or not checkpoint.endswith(".pth")
            or Path(checkpoint).name != checkpoint
        ):
            raise ConfigError(
                f"evaluations[{index}].checkpoint in {path} must be a .pth file name in the run's "
                f"folder (e.g. best.pth), got {checkpoint!r}"
            )
        label = str(entry.get("label", name))
        evaluations.append(Evaluation(name, label, tuple(args), checkpoint))
    metrics = data.get("metrics", ["mean_dice", "miou"])
    if not isinstance(metrics, list) or not metrics:
        raise ConfigError(f"'metrics' in {path} must be a non-empty list, got {metrics!r}")
    return Experiment(
        title=str(data.get("title", path.stem)),
        description=str(data.get("description", "")).strip(),
        defaults=_mapping(data.get("defaults"), f"defaults in {path}"),
        evaluations=tuple(evaluations),
        metrics=tuple(str(m) for m in metrics),
        runs=tuple(runs),
        timing=_flag(data.get("timing", False), f"'timing' in {path}"),
    )


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    return value


def _seconds_per_iteration(run_dir: Path) -> float | None:
    """Training seconds per iteration of a run: the epochs' ``time`` (the training loop only,
    not validation) over the iterations done, from ``metrics.jsonl``; ``None`` without it."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    iterations = max((int(r.get("iteration", 0)) for r in records), default=0)
    if iterations < 1:
        return None
    return sum(float(r.get("time", 0.0)) for r in records) / iterations


def _set_argument(key: str, value: Any) -> str:
    """``key=value`` with the value written as one-line YAML, as ``--set`` parses it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()  # a plain scalar's document end marker
    return f"{key}={text}"


def _placeholders(run: ExperimentRun, output_dir: Path) -> dict[str, str]:
    return {
        "{output}": str(output_dir),
        "{run_dir}": str(output_dir / run.name),
        "{config}": run.config,
    }


def _filled(value: Any, placeholders: Mapping[str, str]) -> Any:
    """``value`` with the placeholders replaced in its strings (also inside lists and mappings);
    other braces, e.g. a YAML flow mapping, are left alone."""
    if isinstance(value, str):
        for placeholder, text in placeholders.items():
            value = value.replace(placeholder, text)
        return value
    if isinstance(value, list):
        return [_filled(item, placeholders) for item in value]
    if isinstance(value, Mapping):
        return {key: _filled(item, placeholders) for key, item in value.items()}
    return value


def settings_arguments(
    run: ExperimentRun, experiment: Experiment, output_dir: Path, extra_sets: Sequence[str] = ()
) -> list[str]:
    """The ``--set`` arguments of ``run``'s settings: the recipe's ``defaults``, then the run's
    ``set`` (placeholders filled in), then ``extra_sets`` (the runner's own ``--set key=value``
    strings, passed through unchanged; a key given there drops the recipe's setting of it)."""
    replaced = {item.split("=", 1)[0].strip() for item in extra_sets}
    settings = _filled({**experiment.defaults, **run.overrides}, _placeholders(run, output_dir))
    arguments = []
    for key, value in settings.items():
        if key not in replaced:
            arguments += ["--set", _set_argument(key, value)]
    for item in extra_sets:
        arguments += ["--set", item]
    return arguments


def train_command(
    run: ExperimentRun, experiment: Experiment, output_dir: Path, extra_sets: Sequence[str] = ()
) -> list[str]:
    """``weakseg train`` arguments (without the program) for ``run``: its settings
    (:func:`settings_arguments`), then its output folder and ``resume=auto``."""
    return [
        "train",
        "--config",
        run.config,
        *settings_arguments(run, experiment, output_dir, extra_sets),
        "--set",
        f"output_dir={output_dir / run.name}",
        "--set",
        "resume=auto",
    ]


def prepare_commands(
    run: ExperimentRun, experiment: Experiment, output_dir: Path, extra_sets: Sequence[str] = ()
) -> list[tuple[list[str], Path | None]]:
    """``(weakseg arguments, creates)`` of each prepare step of ``run``, placeholders filled in
    (``{settings}`` becomes :func:`settings_arguments`)."""
    placeholders = _placeholders(run, output_dir)
    commands = []
    for step in run.prepare:
        arguments: list[str] = []
        for argument in step.arguments:
            if argument == SETTINGS_PLACEHOLDER:
                arguments += settings_arguments(run, experiment, output_dir, extra_sets)
            else:
                arguments.append(_filled(argument, placeholders))
        creates = None if step.creates is None else Path(_filled(step.creates, placeholders))
        commands.append((arguments, creates))
    return commands


def eval_command(run: ExperimentRun, evaluation: Evaluation, output_dir: Path) -> list[str]:
    """``weakseg eval`` arguments (without the program) for ``run``'s checkpoint (the final one
    unless the evaluation names another)."""
    run_dir = output_dir / run.name
    report = run_dir / f"eval_{evaluation.name}.json"
    checkpoint = run_dir / evaluation.checkpoint
    return ["eval", str(checkpoint), *evaluation.args, "--output", str(report)]


def _up_to_date(report: Path, checkpoint: Path) -> bool:
    return (
        report.is_file()
        and checkpoint.is_file()
        and report.stat().st_mtime >= checkpoint.stat().st_mtime
    )


def _shown(arguments: Sequence[str], launcher: Sequence[str] = ()) -> str:
    program = [*launcher, "-m", "weakseg"] if launcher else ["weakseg"]
    return shlex.join([*program, *arguments])


def format_results(experiment: Experiment, output_dir: Path, commands: Sequence[str]) -> str:
    """The Markdown results page: title, description, table, machine and commands.

    Rows are runs, columns the metrics of each evaluation, read from the runs' reports
    ``OUTPUT/<run>/eval_<evaluation>.json``, then with ``timing`` the training seconds per
    iteration (:func:`_seconds_per_iteration`); a missing report shows as "-".
    """
    header = ["run"]
    for evaluation in experiment.evaluations:
        for metric in experiment.metrics:
            label = METRIC_LABELS.get(metric, metric)
            header.append(
                f"{label}, {evaluation.label}" if len(experiment.evaluations) > 1 else label
            )
    if experiment.timing:
        header.append("train s/iter")
    lines = [f"# {experiment.title}", ""]
    if experiment.description:
        lines += [experiment.description, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in experiment.runs:
        cells = [run.label]
        for evaluation in experiment.evaluations:
            report_path = output_dir / run.name / f"eval_{evaluation.name}.json"
            report = json.loads(report_path.read_text()) if report_path.is_file() else {}
            for metric in experiment.metrics:
                value = report.get(metric)
                cells.append(f"{value:.3f}" if isinstance(value, (int, float)) else "-")
        if experiment.timing:
            seconds = _seconds_per_iteration(output_dir / run.name)
            cells.append("-" if seconds is None else f"{seconds:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    threads = torch.get_num_threads()
    lines += [
        "",
        f"Run with weakseg {__version__}, PyTorch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, {threads} thread(s); "
        f"written {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "Commands:",
        "",
        "```sh",
        *commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def run_experiment(
    experiment: Experiment,
    output_dir: str | Path,
    *,
    extra_sets: Sequence[str] = (),
    dry_run: bool = False,
    launcher: Sequence[str] = (),
    only: Sequence[str] | None = None,
    executor: Callable[[list[str], Sequence[str]], int] | None = None,
) -> Path:
    """Prepare, train and evaluate every run of ``experiment``; write and return ``results.md``.

    ``results.md`` always covers the whole recipe: runs not (yet) done show "-", and the
    commands section lists every run's commands (prepare, train, eval).

    Args:
        experiment: a recipe (:func:`load_experiment`).
        output_dir: one folder per run goes under it, then ``results.md``.
        extra_sets: ``key=value`` strings given to every run's ``--set`` after the recipe's.
        dry_run: only print the commands, prepare steps included (nothing is run or written);
            returns the would-be path.
        launcher: a program that starts the training processes, e.g.
            ``["torchrun", "--nproc-per-node", "4"]``: training then runs as
            ``torchrun --nproc-per-node 4 -m weakseg train ...`` (evaluation stays one process).
        executor: runs one ``weakseg`` argument list (prepare, train or eval; with the
            launcher, for training) and returns its exit status; default: a subprocess,
            ``python -m weakseg`` with this interpreter or ``LAUNCHER -m weakseg``.
        only: run only these runs (names; :meth:`Experiment.select` checks them).

    Raises:
        RuntimeError: a command failed (named, with its exit status), or a prepare step did not
            create its ``creates`` path; finished runs are kept.
    """
    output_dir = Path(output_dir)
    execute = executor or _subprocess
    selected = {run.name for run in (experiment.select(only) if only else experiment).runs}
    commands: list[str] = []
    for run in experiment.runs:
        run_dir = output_dir / run.name
        steps: list[tuple[str, list[str], Path | None]] = [
            ("prepare", arguments, creates)
            for arguments, creates in prepare_commands(run, experiment, output_dir, extra_sets)
        ]
        steps.append(("train", train_command(run, experiment, output_dir, extra_sets), None))
        steps += [
            ("eval", eval_command(run, evaluation, output_dir), None)
            for evaluation in experiment.evaluations
        ]
        for index, (kind, arguments, creates) in enumerate(steps):
            launch = tuple(launcher) if kind == "train" else ()
            commands.append(_shown(arguments, launch))
            if run.name not in selected:
                continue
            if dry_run:
                print(commands[-1])
                continue
            if kind == "eval" and _up_to_date(Path(arguments[-1]), Path(arguments[1])):
                print(f"[{run.name}] {arguments[-1]} is up to date")
                continue
            running = run_dir / f".prepare-{index}.running"
            if creates is not None:
                if creates.exists() and not running.exists():
                    print(f"[{run.name}] {creates} exists: skipping '{commands[-1]}'")
                    continue
                run_dir.mkdir(parents=True, exist_ok=True)
                running.touch()  # removed once the step succeeds: a stop midway reruns it
            print(f"[{run.name}] {commands[-1]}", flush=True)
            status = execute(arguments, launch)
            if status != 0:
                raise RuntimeError(
                    f"run {run.name!r}: '{commands[-1]}' exited with status {status}"
                )
            if creates is not None:
                if not creates.exists():
                    raise RuntimeError(
                        f"run {run.name!r}: '{commands[-1]}' succeeded but did not create "
                        f"{creates} (its prepare step's 'creates')"
                    )
                running.unlink()
    results = output_dir / "results.md"
    if not dry_run:
        output_dir.mkdir(parents=True, exist_ok=True)
        results.write_text(format_results(experiment, output_dir, commands))
    return results


#: Signals that stop an experiment: passed on to the running step, which saves and exits.
FORWARDED_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux (looked up before forking: no dynamic loading in the child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - unusual libc
        return None


def _child_setup(prctl: Callable[..., int] | None) -> Callable[[], None]:
    """What the step's process does between fork and exec: its own process group (a Ctrl-C
    reaches it once, forwarded by the runner, not twice: a second SIGINT would stop a training
    before it saves) and, on Linux, SIGTERM when the runner dies, even by ``kill -9``: no step
    outlives the experiment."""

    def setup() -> None:  # pragma: no cover - runs in the child
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG

    return setup


def _subprocess(arguments: list[str], launcher: Sequence[str] = ()) -> int:
    """Run one step as ``python -m weakseg ARGS`` (or ``LAUNCHER -m weakseg ARGS``) and return
    its exit status.

    SIGINT, SIGTERM and SIGHUP sent to the runner are passed on to the step, and the runner
    waits for it (a training writes its checkpoint), then exits with status 128 + the signal
    number: rerunning the same command continues where it stopped.
    """
    program = [*launcher, "-m", "weakseg"] if launcher else [sys.executable, "-m", "weakseg"]
    if threading.current_thread() is not threading.main_thread() or os.name != "posix":
        return subprocess.run([*program, *arguments], check=False).returncode
    received: list[int] = []
    process: subprocess.Popen | None = None

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        setup = _child_setup(_prctl())
        process = subprocess.Popen([*program, *arguments], preexec_fn=setup)
        if received:  # a signal arrived while the child was being started
            process.send_signal(received[0])
        status = process.wait()
    finally:
        if process is not None and process.poll() is None:  # the runner itself is failing
            process.terminate()
            process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        name = signal.Signals(received[0]).name
        print(
            f"weakseg experiment: stopped by {name}; the step '{shlex.join(arguments[:1])} ...' "
            f"exited with status {status}; run the same command again to continue",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(128 + received[0])
    return status
