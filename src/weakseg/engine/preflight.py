"""Checks a training run makes before its first iteration: the label files of every split it
uses hold only class ids of ``classes.txt`` (or 255).

Without them a class id beyond ``classes.txt`` in one training scribble crashes the run
mid-epoch, and one in a validation mask at the first validation, losing the iterations since
the last checkpoint. :func:`check_labels` reads the label files of the splits in use (a pass
over the files with :func:`weakseg.data.check.check_split_labels`: PNG histograms, no image is
decoded twice) and raises one :class:`~weakseg.errors.DataError` naming the first bad file and
value. A clean result is remembered in the run folder (``.labels-checked.json``, keyed by the
folders' file names, sizes and modification times), so a resumed run or a rerun of an
experiment does not read the files again.

Only the ``folder`` dataset format is checked (synthetic data is valid by construction; VOC
labels are checked as they are read).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from weakseg.errors import DataError

__all__ = ["CACHE_NAME", "check_labels", "label_folders"]

#: The file in the run folder that remembers which label folders were found clean.
CACHE_NAME = ".labels-checked.json"


def label_folders(config: Any) -> dict[str, tuple[str, ...]]:
    """Split name -> the label folders (``scribbles``, ``masks``) of ``config``'s dataset that
    the run reads for it: the training labels of its ``supervision`` (none when ``label_dir``
    or ``cue_dir`` replace them) and the validation masks. Empty unless ``dataset: folder``."""
    if config.dataset != "folder":
        return {}
    folders: dict[str, tuple[str, ...]] = {}
    if config.label_dir is None and config.cue_dir is None:
        train = {
            "scribbles": ("scribbles",),
            "clicks": ("scribbles",),
            "full": ("masks",),
            "tags": ("scribbles", "masks"),  # tags come from whichever labels an image has
        }.get(config.supervision, ())
        if train:
            folders[config.train_split] = train
    if config.val_split:
        folders[config.val_split] = tuple(
            dict.fromkeys((*folders.get(config.val_split, ()), "masks"))
        )
    return folders


def _signature(root: Path, split: str, num_classes: int, folders: tuple[str, ...]) -> str:
    """A digest of what the check depends on: the split file, K, and the name, size and
    modification time of every file in the label folders."""
    digest = hashlib.sha256()
    digest.update(f"{root.resolve()}\0{split}\0{num_classes}\0{','.join(folders)}\0".encode())
    split_file = root / "splits" / f"{split}.txt"
    digest.update(split_file.read_bytes() if split_file.is_file() else b"<missing>")
    for folder in folders:
        directory = root / folder
        if not directory.is_dir():
            digest.update(f"\0{folder}:<missing>".encode())
            continue
        with os.scandir(directory) as entries:
            rows = sorted(
                (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                for entry in entries
                if entry.is_file()
            )
        digest.update(f"\0{folder}:{rows!r}".encode())
    return digest.hexdigest()


def _read_cache(path: Path) -> set[str]:
    try:
        entries = json.loads(path.read_text()).get("clean", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {e for e in entries if isinstance(e, str)}


def check_labels(config: Any, num_classes: int, run_dir: str | Path | None = None) -> int:
    """Check the label files of every split ``config`` trains or validates on.

    Args:
        config: a :class:`~weakseg.engine.config.TrainConfig` (its dataset, splits,
            supervision).
        num_classes: K, the number of names in ``classes.txt``.
        run_dir: where to remember clean results (``None``: not remembered).

    Returns:
        The number of splits whose files were read (0 when all were remembered clean).

    Raises:
        DataError: a label file holds a value >= K other than 255, or cannot be read (the
            first such file, its values, and how many more files are bad).
    """
    folders = label_folders(config)
    if not folders:
        return 0
    from weakseg.data.check import check_split_labels

    root = Path(config.data_root)
    cache = Path(run_dir) / CACHE_NAME if run_dir is not None else None
    clean = _read_cache(cache) if cache is not None else set()
    checked = 0
    for split, used in folders.items():
        signature = _signature(root, split, num_classes, used)
        if signature in clean:
            continue
        checked += 1
        problems = [
            p
            for p in check_split_labels(root, split, num_classes)
            if p.path is None or any(root / folder in p.path.parents for folder in used)
        ]
        if problems:
            more = f" (and {len(problems) - 1} more bad label files)" if len(problems) > 1 else ""
            raise DataError(
                f"split {split!r}: {problems[0]}{more}",
                hint=f"fix the file or classes.txt ({num_classes} classes); "
                f"'weakseg data check {root}' lists every problem",
            )
        clean.add(signature)
    if cache is not None and checked:
        try:
            cache.write_text(json.dumps({"clean": sorted(clean)}) + "\n")
        except OSError:
            pass  # remembering is an optimization
    return checked
