"""The output folder: checked before any work, replaced as a whole after it.

A folder is written only when it does not exist, is empty, or holds an earlier run of this project (a saved model
with ``training_summary.json``, or the ``trials/`` of an interrupted run). The new model is saved into a staging
folder beside it and swapped in, so a kill leaves the old model or the new one, never a mix, and no stale plot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MARKERS = ("training_summary.json", "trials/run.json")


class OutputDirError(ValueError):
    """The output folder holds something this project did not write; the message names it."""


def check_output_dir(folder: Path) -> None:
    """Raise ``OutputDirError`` unless ``folder`` may be (over)written by a training run."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputDirError(f"--output-dir {folder} is a file, not a folder: name a new or empty folder.")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries or any((folder / marker).is_file() for marker in MARKERS):
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise OutputDirError(
        f"--output-dir {folder} is not empty and holds no earlier model of this project ({shown}); "
        "training would overwrite it. Name a new or empty folder."
    )


def staging_dir(folder: Path) -> Path:
    """An empty folder beside ``folder`` to save the new model into."""
    folder = Path(folder).resolve()
    staging = folder.parent / f".{folder.name}.new-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def swap_in(staging: Path, folder: Path, keep: tuple[str, ...] = ("trials",)) -> None:
    """Move ``keep`` entries of the old folder into ``staging``, then replace ``folder`` by ``staging``."""
    folder = Path(folder).resolve()
    if folder.exists():
        for name in keep:
            if (folder / name).exists() and not (staging / name).exists():
                os.replace(folder / name, staging / name)
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, folder)
