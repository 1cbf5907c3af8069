"""weakseg.engine.run_dir: the run-folder lock, the refusal to start over a run, log truncation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from weakseg.engine.run_dir import (
    LOCK_NAME,
    RunDirLock,
    check_new_run,
    check_writable,
    lock_holder,
    truncate_log,
)
from weakseg.errors import RunDirError

_HOLD = textwrap.dedent(
    """
    import sys, time
    from weakseg.engine.run_dir import RunDirLock
    lock = RunDirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def _holder(run_dir) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "locked"
    return process


def test_lock_is_exclusive_and_names_the_holder(tmp_path) -> None:
    holder = _holder(tmp_path / "run")
    try:
        start = time.perf_counter()
        with pytest.raises(RunDirError, match=rf"in use by another trainer \(pid {holder.pid} on"):
            RunDirLock(tmp_path / "run").acquire()
        assert time.perf_counter() - start < 1.0  # at once, no waiting
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path) -> None:
    holder = _holder(tmp_path / "run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert f"pid {holder.pid}" in lock_holder(tmp_path / "run")  # the stale file stays
    with RunDirLock(tmp_path / "run") as lock:
        assert lock.held and lock_holder(tmp_path / "run").startswith(f"pid {os.getpid()} ")
    assert lock_holder(tmp_path / "run") is None  # emptied on release


def test_lock_release_and_reacquire_in_process(tmp_path) -> None:
    lock = RunDirLock(tmp_path).acquire()
    assert lock.acquire() is lock  # idempotent
    lock.release()
    lock.release()
    assert not lock.held
    with RunDirLock(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).exists()


def test_unwritable_run_folder_is_named(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match=r"cannot write to the run folder .*file/run: .*; choose"):
        check_writable(blocker / "run")
    with pytest.raises(RunDirError, match="cannot write to the run folder"):
        RunDirLock(blocker / "run").acquire()


def test_new_run_over_an_old_one_is_refused_or_overwritten(tmp_path) -> None:
    assert check_new_run(tmp_path / "none", resume=False) == []
    (tmp_path / "masks").mkdir()  # what a prepare step made: not a run
    assert check_new_run(tmp_path, resume=False) == []
    (tmp_path / "checkpoint.pth").write_bytes(b"old")
    (tmp_path / "losses.jsonl").write_text("{}\n")
    (tmp_path / "proposals" / "epoch_2").mkdir(parents=True)
    with pytest.raises(
        RunDirError,
        match=r"already holds a run \(checkpoint.pth, losses.jsonl, proposals\); continue it "
        r"with --resume auto, replace it with --overwrite",
    ):
        check_new_run(tmp_path, resume=False)
    assert (tmp_path / "checkpoint.pth").read_bytes() == b"old"
    assert check_new_run(tmp_path, resume=True) == []
    assert check_new_run(tmp_path, resume=False, overwrite=True) == [
        "checkpoint.pth",
        "losses.jsonl",
        "proposals",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]


def test_truncate_log_drops_rows_after_the_checkpoint(tmp_path) -> None:
    log = tmp_path / "losses.jsonl"
    rows = [{"iteration": i, "loss": 1.0 / i} for i in range(1, 7)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 7, "lo')
    assert truncate_log(log, 4) == 3  # 5, 6 and the line cut short
    assert [json.loads(line)["iteration"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert truncate_log(log, 4) == 0
    assert truncate_log(tmp_path / "missing.jsonl", 0) == 0
    assert truncate_log(log, 0) == 4 and log.read_text() == ""
    assert [p.name for p in tmp_path.iterdir()] == ["losses.jsonl"]  # no temporary left
