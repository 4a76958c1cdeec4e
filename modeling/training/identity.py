"""What a run is, for ``--resume``: the data (a fingerprint of its texts and labels) and every setting that changes
the trials' result, stored as ``trials/run.json``. Resuming with anything different is refused, not reused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from modeling.data.training_data import TrainingData
from modeling.model.build import encoder_display_name
from modeling.training.settings import TrainSettings

# Settings that do not change a trial's result: the grid itself (each trial is named by its own point), where
# things go, and how the run talks. Interpolation and refit act after the trials and are re-run on resume.
NOT_IDENTITY = {
    "data", "learning_rates", "weight_decays", "interpolate", "refit", "output_dir", "cache_dir", "resume",
    "push_to_hub", "private", "show_progress", "format", "checkpoint_seconds",
}  # fmt: skip


class ResumeMismatch(ValueError):
    """``--resume`` was given data or settings other than those the stored trials were trained with."""


def data_fingerprint(data: TrainingData) -> str:
    content = {
        "pairs": sorted((q, sorted(d)) for q, d in data.pairs.items()),
        "negatives": sorted((q, list(n)) for q, n in data.negatives.items()),
        "labelled": sorted(data.labelled),
        "dev_queries": sorted(data.dev_queries.items()),
        "dev_relevant": sorted((q, sorted(d)) for q, d in data.dev_relevant.items()),
        "dev_corpus": sorted(data.dev_corpus.items()),
        "corpus": sorted(data.corpus),
    }
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()


def run_identity(data: TrainingData, settings: TrainSettings) -> dict:
    identity = {key: value for key, value in vars(settings).items() if key not in NOT_IDENTITY}
    identity["encoder"] = encoder_display_name(settings.encoder)
    identity["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    identity["data_fingerprint"] = data_fingerprint(data)
    return json.loads(json.dumps(identity))


def check_and_record(trials: Path, identity: dict, resume: bool, write: bool = True) -> None:
    """With ``resume``: refuse stored trials of another run. Then record this run's identity (when ``write``: every
    torchrun rank checks, so all of them stop on a mismatch, and rank 0 writes)."""
    path = trials / "run.json"
    if resume and trials.is_dir() and any(trials.iterdir()):
        stored = json.loads(path.read_text()) if path.is_file() else None
        if stored != identity:
            if stored is None:
                what = "it holds no run.json (written by an older version)"
            else:
                differ = sorted(k for k in {*stored, *identity} if stored.get(k) != identity.get(k))
                what = "; ".join(
                    "the data differs (its texts or labels)" if k == "data_fingerprint"
                    else f"{k}: stored {stored.get(k)!r}, now {identity.get(k)!r}"
                    for k in differ
                )  # fmt: skip
            raise ResumeMismatch(
                f"--resume: the trials in {trials} come from another run ({what}). Rerun with the same data and "
                f"settings, or start fresh: drop --resume (the trials are retrained) or delete {trials}."
            )
    if write:
        trials.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(identity, indent=2))
