"""What ``pip install .`` puts on a user's machine: our packages only, never top-level ``train`` / ``evaluate``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import modeling

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("frozen_head-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_installs_no_generic_top_level_modules(wheel):
    top_level = {name.split("/", 1)[0] for name in wheel.namelist() if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"modeling", "model_card"}, top_level  # no train.py / evaluate.py shadowing HF's `evaluate`


def test_wheel_ships_the_head_file_the_card_template_and_entry_points(wheel):
    names = set(wheel.namelist())
    assert "modeling/model/projection_head.py" in names  # copied into every saved model
    assert "model_card/template.md" in names
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "frozen-head-train = modeling.cli.train:main" in text
    assert "frozen-head-evaluate = modeling.cli.evaluate:main" in text


def test_version_is_the_package_version(wheel):
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    version = next(
        line.split(": ", 1)[1] for line in wheel.read(metadata).decode().splitlines() if line.startswith("Version: ")
    )
    assert version == modeling.__version__
