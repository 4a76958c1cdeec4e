import copy
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny_encoder import tiny_encoder


@pytest.fixture(scope="session")
def _tiny_encoder_session(tmp_path_factory):
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny(_tiny_encoder_session):
    """A fresh copy of the tiny random encoder (32-dim) for each test."""
    return copy.deepcopy(_tiny_encoder_session)


@pytest.fixture()
def cache_root(tmp_path):
    """An empty embedding-cache folder, so no test reads another's cache."""
    return tmp_path / "embedding-cache"


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    """The tiny encoder saved once as a sentence-transformers folder, to pass to train.py as ``--encoder``."""
    from tests.training_fixtures import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("encoders") / "tiny")
