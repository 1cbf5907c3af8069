"""A run folder belongs to one run: the trainer's lock, the refusal to start over an earlier
run, and the logs cut back to the checkpoint on resume.

``weakseg train`` writes ``checkpoint.pth``, ``best.pth``, ``config.yaml``, ``losses.jsonl``,
``metrics.jsonl`` (and ``tensorboard/``, ``proposals/``) into its ``output_dir``. Two trainers
in one folder would interleave their logs and race on the checkpoint, and a new run in the
folder of an old one would replace its checkpoints and mix the logs of both. So:

- :class:`RunDirLock`: an exclusive ``fcntl.flock`` on ``output_dir/.lock``, held while
  training. A second trainer fails at once with a :class:`~weakseg.errors.RunDirError` naming
  the holder's pid (written into the file). The operating system releases the lock when its
  holder dies, even by ``kill -9``, so a stale lock file never blocks the next trainer.
- :func:`check_new_run`: a fresh run (no ``resume``) into a folder that holds a run's files is
  refused, unless ``overwrite``, which removes them first (and says so).
- :func:`truncate_log`: after a resume from iteration ``i``, the rows of ``losses.jsonl`` /
  ``metrics.jsonl`` written after the checkpoint (iterations ``> i``, and a line cut short by a
  crash) are dropped, so that the resumed run does not log them twice.
- :func:`check_resume_settings`: a resumed run continues with the checkpoint's optimizer, LR
  schedule and RNG states, so a changed ``lr`` (and most other settings) would be recorded in
  ``config.yaml`` but ignored. Such a change is refused, naming the key and both values; only
  the settings of :data:`RESUME_MAY_CHANGE` (where the run writes, on what device, how long it
  trains) take effect on resume.

Example::

    with RunDirLock("runs/acdc"):
        ...  # train
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from weakseg.errors import ConfigError, RunDirError, WeaksegError

try:  # POSIX; elsewhere the lock is a pid file whose holder is checked for life
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "RESUME_MAY_CHANGE",
    "RUN_FILES",
    "RunDirLock",
    "check_new_run",
    "check_resume_settings",
    "check_writable",
    "ensure_writable_folder",
    "lock_holder",
    "run_files",
    "truncate_log",
]

#: The lock file inside a run folder.
LOCK_NAME = ".lock"

#: What a training leaves in its run folder (files and folders).
RUN_FILES: tuple[str, ...] = (
    "checkpoint.pth",
    "best.pth",
    "config.yaml",
    "losses.jsonl",
    "metrics.jsonl",
    "tensorboard",
    "proposals",
)


#: Settings a resumed run may change, because they are applied from the resume on: where and how
#: it runs and logs, and how long it trains (``epochs`` / ``max_iterations`` move the end of the
#: poly schedule, which is recomputed from them). Every other change is refused.
RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {
        "resume",
        "output_dir",
        "data_root",
        "device",
        "threads",  # applied on resume (build sets it); later numbers follow the new count
        "num_workers",
        "progress",
        "tensorboard",
        "log_every",
        "checkpoint_every",
        "eval_every",
        "val_batch_size",
        "epochs",
        "max_iterations",
        "pretrained",  # the weights come from the checkpoint
        "skip_bad",
    }
)


def check_writable(run_dir: str | Path) -> Path:
    """Create ``run_dir`` if needed and check that a file can be written in it, before any work.

    Raises:
        RunDirError: the folder cannot be created or written (naming it and the reason).
    """
    run_dir = Path(run_dir)
    hint = "choose another output_dir (--set output_dir=PATH) or fix its permissions"
    return ensure_writable_folder(run_dir, f"to the run folder {run_dir}", hint, RunDirError)


def ensure_writable_folder(
    folder: Path, what: str, hint: str, error: type[WeaksegError] = WeaksegError
) -> Path:
    """Create ``folder`` if needed and write a temporary file in it, before any work.

    Raises:
        error: ``cannot write <what>: <the OS's reason>``, with ``hint``.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise error(f"cannot write {what}: {exc.strerror or exc}", hint=hint) from exc
    return folder


def lock_holder(run_dir: str | Path) -> str | None:
    """What the lock file of ``run_dir`` says about its last holder (``"pid 123 on host"``), or
    ``None`` when there is no such file or it is empty."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text().strip()
    except OSError:
        return None
    return text or None


class RunDirLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release` (or as a
    context manager).

    The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``run_dir/.lock``: it belongs to the open
    file, so the operating system drops it when the holder exits or is killed, and a crashed
    trainer never leaves the folder locked. The holder writes ``pid <pid> on <host>`` into the
    file, which the refusal of a second trainer quotes. The file itself stays (removing it would
    let a third process lock a new file while a second still holds the old one).

    Args:
        run_dir: the run folder (created if missing).

    Raises (from :meth:`acquire`):
        RunDirError: another process holds the lock (naming its pid), or the folder is not
            writable.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        """Take the lock, or fail at once (no waiting) when another process holds it."""
        if self._fd is not None:
            return self
        check_writable(self.run_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                _pid_file_lock(fd, self.path)
        except BlockingIOError:
            os.close(fd)
            raise self._busy() from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _busy(self) -> RunDirError:
        holder = lock_holder(self.run_dir) or "another process"
        return RunDirError(
            f"the run folder {self.run_dir} is in use by another trainer ({holder})",
            hint="wait for it to finish or stop it, or train into another output_dir",
        )

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the file releases the flock

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _pid_file_lock(fd: int, path: Path) -> None:  # pragma: no cover - Windows only
    """Without ``flock``: the lock is taken when the file names no living process."""
    text = os.read(fd, 200).decode(errors="replace").split()
    if len(text) >= 2 and text[0] == "pid" and text[1].isdigit() and int(text[1]) != os.getpid():
        try:
            os.kill(int(text[1]), 0)
        except OSError:
            return  # its holder is dead: stale
        raise BlockingIOError(f"{path} is held by pid {text[1]}")


def run_files(run_dir: str | Path) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir`` (in that order)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def check_new_run(run_dir: str | Path, *, resume: bool, overwrite: bool = False) -> list[str]:
    """Refuse to start a fresh run over the files of an earlier one.

    Args:
        run_dir: the run folder.
        resume: the run continues the folder's checkpoint (then anything goes).
        overwrite: remove the earlier run's files (:data:`RUN_FILES`) instead of refusing.

    Returns:
        The names removed (empty unless ``overwrite`` found an earlier run).

    Raises:
        RunDirError: a fresh run, without ``overwrite``, into a folder that holds a run's files.
    """
    found = run_files(run_dir)
    if resume or not found:
        return []
    if not overwrite:
        raise RunDirError(
            f"the run folder {run_dir} already holds a run ({', '.join(found)})",
            hint="continue it with --resume auto, replace it with --overwrite, or train into "
            "another output_dir (--set output_dir=PATH)",
        )
    for name in found:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return found


def truncate_log(path: str | Path, iteration: int) -> int:
    """Keep the rows of a JSON-lines log whose ``"iteration"`` is at most ``iteration``.

    A resumed run starts again from its checkpoint's iteration: the rows logged after that
    checkpoint (and a last line cut short by a crash) would otherwise appear twice. Rows without
    an ``"iteration"`` are kept. The file is rewritten atomically; nothing happens when it is
    missing or already clean.

    Returns:
        The number of rows dropped.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by kill -9
            dropped += 1
            continue
        step = row.get("iteration") if isinstance(row, dict) else None
        if isinstance(step, int | float) and step > iteration:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write("".join(f"{line}\n" for line in kept))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return dropped


def check_resume_settings(
    saved: dict[str, Any] | None,
    current: dict[str, Any],
    defaults: dict[str, Any],
    checkpoint: str | Path,
) -> None:
    """Refuse to resume ``checkpoint`` with settings that would be recorded but not applied.

    Args:
        saved: the checkpoint's ``args`` (``None`` for a checkpoint without them: no check).
        current: the settings of the resumed run.
        defaults: the default settings (for keys that the checkpoint predates).
        checkpoint: its path, for the message.

    Raises:
        ConfigError: a key outside :data:`RESUME_MAY_CHANGE` whose value differs, naming the
            key, the checkpoint's value and the new one (and how many more keys differ).
    """
    if not isinstance(saved, dict):
        return
    changed = [
        key
        for key, value in current.items()
        if key not in RESUME_MAY_CHANGE and saved.get(key, defaults.get(key)) != value
    ]
    if not changed:
        return
    key = changed[0]
    more = f" (and {len(changed) - 1} more: {', '.join(changed[1:])})" if len(changed) > 1 else ""
    raise ConfigError(
        f"cannot resume {checkpoint} with {key}={current[key]!r}: the run was trained with "
        f"{key}={saved.get(key, defaults.get(key))!r}{more}",
        hint="resume with the run's settings (drop the --set or config change), or start a new "
        "run in another output_dir",
    )
