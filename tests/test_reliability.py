"""Nothing a user does loses their data (issue 15): one test per numbered case of the issue,
through the public command line only (``weakseg.cli.main`` and files), so that each could be run
against the code before the fix and fails there.

Cases owned elsewhere: 4 (``segment -o X.png`` replacing the image) and 11 (``segment -o``
failing late) are ``weakseg segment``'s, tested in ``tests/cli/test_segment.py``. Unit tests of
the pieces: ``tests/engine/test_run_dir.py``, ``test_checkpoint.py``, ``test_preflight.py``,
``tests/cli/test_predict.py``, ``tests/cli/test_scribbles.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weakseg.cli import main
from weakseg.data import write_synthetic_dataset
from weakseg.engine.checkpoint import load_checkpoint, save_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=4, n_val=2, size=32)


def _settings(data_root: Path, output_dir: Path, *extra: str) -> list[str]:
    settings = [
        "dataset=folder",
        f"data_root={data_root}",
        f"output_dir={output_dir}",
        "model=unet",
        "crop_size=32",
        "batch_size=2",
        "max_iterations=2",
        "num_workers=0",
        "tensorboard=false",
        "progress=false",
        *extra,
    ]
    return ["train", *(item for setting in settings for item in ("--set", setting))]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def _error_line(capsys: pytest.CaptureFixture) -> str:
    """stderr of a refused command: one ``error:`` line, no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err and len([x for x in lines if x.startswith("error:")]) == 1
    return lines[-1]


def _iterations(path: Path) -> list[int]:
    """The ``iteration`` of each complete row of a JSON-lines log (one being written is skipped)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line)["iteration"])
        except ValueError:
            continue
    return rows


def _checkpoint(path: Path) -> Path:
    """A checkpoint of an untrained U-Net in the format of ``weakseg train``."""
    from weakseg.models import build_model

    torch.manual_seed(0)
    state = {
        "model": build_model("unet", 4).state_dict(),
        "args": {"mean": None, "std": None},
        "model_config": {"name": "unet", "num_classes": 4, "in_channels": 3, "output_stride": None},
        "class_names": ["background", "stripes", "dots", "speckle"],
    }
    return save_checkpoint(state, path)


def _image(path: Path, size: tuple[int, int] = (20, 30), value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)
    return path


# A ``weakseg train`` that reports each optimizer step and slows down from step ``SLOW`` on,
# leaving time to act on it from outside.
_RUNNER = """
import os, sys, time
import weakseg.engine.train as engine

original, count = engine.train_step, [0]
slow = int(os.environ.get("SLOW", "1"))

def slow_step(*args, **kwargs):
    terms = original(*args, **kwargs)
    count[0] += 1
    print(f"step {count[0]}", flush=True)
    if count[0] >= slow:
        time.sleep(float(os.environ.get("PAUSE", "0.5")))
    return terms

engine.train_step = slow_step
from weakseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _start_trainer(tmp_path: Path, argv: list[str], **env: str) -> subprocess.Popen:
    runner = tmp_path / "runner.py"
    runner.write_text(_RUNNER)
    return subprocess.Popen(
        [sys.executable, str(runner), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_env(), **env},
    )


def _wait_for(process: subprocess.Popen, line: str) -> None:
    for out in process.stdout:
        if out.strip() == line:
            return
    raise AssertionError(f"the trainer ended before {line!r}: {process.stderr.read()[-2000:]}")


# 1 -------------------------------------------------------------------------------------------
def test_case01_predict_never_overwrites_inputs_nor_its_own_outputs(tmp_path, capsys) -> None:
    checkpoint = _checkpoint(tmp_path / "c.pth")
    images = tmp_path / "images"
    original = _image(images / "x.png").read_bytes()
    assert main(["predict", str(checkpoint), str(images), "-o", str(images)]) == 2
    assert "holds the input" in _error_line(capsys)
    assert (images / "x.png").read_bytes() == original
    _image(images / "a.png", value=10)
    _image(images / "a.jpg", value=200)
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(images), "-o", str(out), "--no-overlay"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg.png", "a_png.png", "x.png"]


# 2 -------------------------------------------------------------------------------------------
def test_case02_train_into_an_earlier_run_is_refused_or_overwritten(
    tmp_path, data_root, capsys
) -> None:
    run = tmp_path / "run"
    assert main(_settings(data_root, run, "log_every=1")) == 0
    names = ("checkpoint.pth", "config.yaml", "losses.jsonl", "metrics.jsonl")
    kept = {name: (run / name).read_bytes() for name in names}
    assert main(_settings(data_root, run, "lr=0.5", "log_every=1")) == 2
    line = _error_line(capsys)
    assert f"the run folder {run} already holds a run (checkpoint.pth" in line
    assert "--resume auto" in line and "--overwrite" in line
    assert {name: (run / name).read_bytes() for name in kept} == kept
    assert main([*_settings(data_root, run, "lr=0.5", "log_every=1"), "--overwrite"]) == 0
    assert "--overwrite: removed checkpoint.pth" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoint.pth")["args"]["lr"] == 0.5
    assert _iterations(run / "losses.jsonl") == [1, 2]  # the new run's rows only


# 3 -------------------------------------------------------------------------------------------
def test_case03_second_trainer_on_a_folder_stops_at_once(tmp_path, data_root, capsys) -> None:
    run = tmp_path / "run"
    first = _start_trainer(
        tmp_path, _settings(data_root, run, "max_iterations=200", "log_every=1", "lr=0.02")
    )
    try:
        _wait_for(first, "step 1")
        start = time.perf_counter()
        assert main(_settings(data_root, run, "max_iterations=2", "lr=0.5")) == 2
        elapsed = time.perf_counter() - start
        line = _error_line(capsys)
        assert f"the run folder {run} is in use by another trainer (pid {first.pid} on" in line
        assert elapsed < 5.0, elapsed  # at once: before any data or model is built
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 128 + signal.SIGTERM, stderr
    # the first trainer's files are its own, intact
    iterations = _iterations(run / "losses.jsonl")
    assert iterations == list(range(1, len(iterations) + 1))
    checkpoint = load_checkpoint(run / "checkpoint.pth")
    assert checkpoint["args"]["lr"] == 0.02 and checkpoint["iteration"] == iterations[-1]
    assert "lr: 0.02" in (run / "config.yaml").read_text()


# 4 -------------------------------------------------------------------------------------------
def test_case04_scribble_commands_never_write_over_their_inputs(tmp_path, capsys) -> None:
    root = write_synthetic_dataset(tmp_path / "d", n_train=2, n_val=1, size=32)
    masks, scribbles = root / "masks", root / "scribbles"
    before = {p: p.read_bytes() for folder in (masks, scribbles) for p in folder.iterdir()}
    assert main(["scribbles", "simulate", str(masks), str(masks)]) == 2
    assert "is the input folder" in _error_line(capsys)
    assert main(["scribbles", "shorten", str(scribbles), str(scribbles), "--ratio", "0.5"]) == 2
    assert "is the input folder" in _error_line(capsys)
    assert {p: p.read_bytes() for p in before} == before


# 5 -------------------------------------------------------------------------------------------
def test_case05_resume_with_a_changed_setting_is_refused(tmp_path, data_root, capsys) -> None:
    run = tmp_path / "run"
    assert main(_settings(data_root, run, "lr=0.01")) == 0
    config = (run / "config.yaml").read_text()
    argv = [*_settings(data_root, run, "lr=0.1", "max_iterations=3"), "--resume", "auto"]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "with lr=0.1: the run was trained with lr=0.01" in line
    assert (run / "config.yaml").read_text() == config
    assert load_checkpoint(run / "checkpoint.pth")["iteration"] == 2
    # what a resume applies may change: a longer run
    argv = [*_settings(data_root, run, "lr=0.01", "max_iterations=3"), "--resume", "auto"]
    assert main(argv) == 0
    assert load_checkpoint(run / "checkpoint.pth")["iteration"] == 3


# 6 -------------------------------------------------------------------------------------------
def test_case06_predict_skip_bad_goes_on(tmp_path, capsys) -> None:
    checkpoint = _checkpoint(tmp_path / "c.pth")
    images = tmp_path / "images"
    _image(images / "good.png")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(images), "-o", str(out)]) == 2
    assert "broken.png" in _error_line(capsys)
    assert main(["predict", str(checkpoint), str(images), "-o", str(out), "--skip-bad"]) == 0
    assert "broken.png" in capsys.readouterr().err
    assert (out / "good.png").is_file()


# 7 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["scribbles", "masks"])
def test_case07_bad_label_values_are_found_before_the_first_iteration(
    tmp_path, folder, capsys
) -> None:
    root = write_synthetic_dataset(tmp_path / "d", n_train=4, n_val=2, size=32)
    split = "train" if folder == "scribbles" else "val"
    sample = (root / "splits" / f"{split}.txt").read_text().split()[-1]
    bad = root / folder / f"{sample}.png"
    label = np.array(Image.open(bad))
    label[0, 0] = 9  # classes.txt has 4 classes
    Image.fromarray(label).save(bad)
    run = tmp_path / "run"
    assert main(_settings(root, run, "log_every=1")) == 2
    line = _error_line(capsys)
    assert str(bad) in line and "{9}" in line
    assert not (run / "losses.jsonl").exists() and not (run / "checkpoint.pth").exists()


# 8 -------------------------------------------------------------------------------------------
def test_case08_user_errors_are_one_line_in_train_eval_predict(tmp_path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in _error_line(capsys)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["eval", str(tmp_path / "junk.pth")]) == 2
    assert "junk.pth" in _error_line(capsys)

    class Code:
        def __reduce__(self):
            return (print, ("crafted code ran",))

    torch.save({"model": Code()}, tmp_path / "crafted.pth")
    image = _image(tmp_path / "x.png")
    for argv in (
        ["predict", str(tmp_path / "crafted.pth"), str(image), "-o", str(tmp_path / "o")],
        ["eval", str(tmp_path / "crafted.pth")],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        line = captured.err.strip()
        assert line.startswith("error: refused checkpoint") and "\n" not in line, line
        assert "weights_only" not in line and "crafted code ran" not in captured.out


# 9 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lr=.nan", "lr must be a finite number > 0, got nan"),
        ("lr=.inf", "lr must be a finite number > 0, got inf"),
        ("losses={grid_potts: {weight: -1}}", "losses.grid_potts.weight must be a finite number"),
        ("losses={dense_crf: {weight: .nan}}", "losses.dense_crf.weight must be a finite number"),
    ],
)
def test_case09_bad_numbers_are_refused_up_front(
    tmp_path, data_root, setting, message, capsys
) -> None:
    run = tmp_path / "run"
    assert main(_settings(data_root, run, setting)) == 2
    assert message in _error_line(capsys)
    assert not run.exists()  # before anything was written


# 10 ------------------------------------------------------------------------------------------
def test_case10_kill9_and_resume_leave_no_duplicates_nor_leftovers(tmp_path, data_root) -> None:
    run = tmp_path / "run"
    common = ["log_every=1", "checkpoint_every=2", "max_iterations=5", "eval_every=1"]
    trainer = _start_trainer(tmp_path, _settings(data_root, run, *common), SLOW="3", PAUSE="2")
    try:
        _wait_for(trainer, "step 3")
        deadline = time.time() + 30
        while _iterations(run / "losses.jsonl")[-1:] != [3] and time.time() < deadline:
            time.sleep(0.02)
        trainer.send_signal(signal.SIGKILL)  # after step 3 was logged, checkpoint at step 2
        trainer.wait(timeout=30)
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert _iterations(run / "losses.jsonl") == [1, 2, 3]
    assert load_checkpoint(run / "checkpoint.pth")["iteration"] == 2
    stale = run / ".checkpoint.pth.killed.tmp"  # what kill -9 during a save leaves
    stale.write_bytes(b"\0" * 4096)
    assert main([*_settings(data_root, run, *common), "--resume", "auto"]) == 0
    assert _iterations(run / "losses.jsonl") == [1, 2, 3, 4, 5]
    assert _iterations(run / "metrics.jsonl") == [2, 4, 5]  # epochs of 2 steps, no repeat
    assert not list(run.glob(".*.tmp"))


# 11 ------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_case11_missing_device_is_one_line_before_any_work(tmp_path, data_root, capsys) -> None:
    checkpoint = _checkpoint(tmp_path / "c.pth")
    image = _image(tmp_path / "x.png")
    for argv in (
        ["predict", str(checkpoint), str(image), "-o", str(tmp_path / "o"), "--device", "cuda"],
        ["eval", str(checkpoint), "--device", "cuda"],
        _settings(data_root, tmp_path / "run", "device=cuda"),
    ):
        assert main(argv) == 2
        assert "cuda asked for, but CUDA is not available" in _error_line(capsys)
    assert not (tmp_path / "o").exists() and not (tmp_path / "run" / "losses.jsonl").exists()


def test_case11_small_image_at_a_small_scale_is_named(tmp_path, capsys) -> None:
    checkpoint = _checkpoint(tmp_path / "c.pth")
    tiny = _image(tmp_path / "tiny.png", size=(1, 1))
    argv = ["predict", str(checkpoint), str(tiny), "-o", str(tmp_path / "o"), "--scales", "0.5"]
    assert main(argv) == 2
    assert f"image {tiny} is 1x1 px: at scale 0.5 it would have no pixel" in _error_line(capsys)


# 12 ------------------------------------------------------------------------------------------
def _quick_demo(out: Path, omp_threads: str) -> dict:
    """``weakseg demo --quick --threads 2`` in a fresh process whose environment asks for
    ``omp_threads`` threads; its results.json."""
    env = {**_env(), "OMP_NUM_THREADS": omp_threads, "MKL_NUM_THREADS": omp_threads}
    argv = ["demo", "--quick", "--threads", "2", "--device", "cpu", "--no-progress"]
    code = "import sys; from weakseg.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, *argv, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def test_case12_demo_numbers_depend_on_threads_not_on_the_environment(tmp_path) -> None:
    one, three = _quick_demo(tmp_path / "a", "1"), _quick_demo(tmp_path / "b", "3")
    keys = ("miou", "iou", "pixel_accuracy", "boundary_error", "elsewhere_error")
    numbers = [[[r[k] for k in keys] for r in report["runs"]] for report in (one, three)]
    assert numbers[0] == numbers[1]  # bit-identical floats, not approximately equal
    assert one["threads"] == three["threads"] == 2
    for run in one["runs"]:  # and the same weights
        first = load_checkpoint(tmp_path / "a" / run["name"] / "checkpoint.pth")
        second = load_checkpoint(tmp_path / "b" / run["name"] / "checkpoint.pth")
        assert first["args"]["threads"] == 2
        assert first["model"].keys() == second["model"].keys()
        assert all(torch.equal(v, second["model"][k]) for k, v in first["model"].items())


def test_case12_threads_of_a_training_config_are_applied(tmp_path, data_root) -> None:
    import numba

    run, dense_crf = tmp_path / "run", "losses={dense_crf: {weight: 1.0e-9}}"
    assert torch.get_num_threads() == 1
    assert main(_settings(data_root, run, "threads=2", dense_crf)) == 0
    assert torch.get_num_threads() == 2  # the fixture restores the test's count
    assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)  # the lattice's
    assert load_checkpoint(run / "checkpoint.pth")["args"]["threads"] == 2
    # applied on resume too (the saved state resumes exactly), so a resume may change it
    argv = _settings(data_root, run, "threads=1", "max_iterations=3", dense_crf)
    assert main([*argv, "--resume", "auto"]) == 0
    assert torch.get_num_threads() == 1
    checkpoint = load_checkpoint(run / "checkpoint.pth")
    assert checkpoint["iteration"] == 3 and checkpoint["args"]["threads"] == 1


def test_case12_bad_thread_counts_are_refused(tmp_path, data_root, capsys) -> None:
    assert main(_settings(data_root, tmp_path / "run", "threads=0")) == 2
    assert "threads must be >= 1, got 0" in _error_line(capsys)
    assert main(["demo", "--quick", "--threads", "0", "--out", str(tmp_path / "d")]) == 2
    line = _error_line(capsys)
    assert (
        line
        == "error: --threads must be >= 1, got 0; the README's numbers are those of --threads 2"
    )
    assert not (tmp_path / "d").exists()


# 3 (experiment) ------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stop_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its children (what a failing test must not leave running)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    for target in (pid, *kids):
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _holder_pid(run_dir: Path) -> int | None:
    try:
        words = (run_dir / ".lock").read_text().split()
    except OSError:
        return None
    return int(words[1]) if len(words) > 1 and words[0] == "pid" else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_case03_experiment_forwards_sigterm_and_no_child_survives(tmp_path, data_root) -> None:
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text("seed: 0\n")
    defaults = {
        "dataset": "folder",
        "data_root": str(data_root),
        "model": "unet",
        "crop_size": 32,
        "batch_size": 2,
        "max_iterations": 100000,  # never finishes by itself here
        "num_workers": 0,
        "tensorboard": False,
        "progress": False,
        "log_every": 1,
        "checkpoint_every": 100000,
    }
    recipe = {
        "title": "t",
        "description": "signal forwarding",
        "defaults": defaults,
        "evaluations": [{"name": "plain", "label": "network"}],
        "metrics": ["miou"],
        "runs": [{"name": "a", "label": "A", "config": str(config)}],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "weakseg", "experiment", str(tmp_path / "recipe.yaml")]
    argv += ["-o", str(out)]

    def start() -> tuple[subprocess.Popen, int]:
        process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=_env())
        losses = out / "a" / "losses.jsonl"
        before = len(_iterations(losses)) if losses.exists() else 0
        try:
            _wait_until(
                lambda: (losses.exists() and len(_iterations(losses)) > before) or process.poll(),
                180,
                "the training step to log",
            )
            assert process.poll() is None, process.stderr.read()
            child = _holder_pid(out / "a")
            assert child is not None and child != process.pid and _alive(child)
        except BaseException:
            _stop_tree(process.pid)
            raise
        return process, child

    process, child = start()
    try:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        survived = _alive(child)
    finally:
        if process.poll() is None:
            process.kill()
        if _alive(child):  # never leave a training behind, even when the test fails
            os.kill(child, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr
    assert not survived  # waited for: it saved its checkpoint and exited
    stopped = load_checkpoint(out / "a" / "checkpoint.pth")["iteration"]
    assert stopped == _iterations(out / "a" / "losses.jsonl")[-1]

    # even kill -9 of the runner leaves no training behind (it gets SIGTERM and saves)
    process, child = start()
    try:
        process.kill()
        process.wait(timeout=30)
        _wait_until(lambda: not _alive(child), 120, f"the orphaned trainer {child} to stop")
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    resumed = load_checkpoint(out / "a" / "checkpoint.pth")["iteration"]
    assert resumed > stopped and resumed == _iterations(out / "a" / "losses.jsonl")[-1]
