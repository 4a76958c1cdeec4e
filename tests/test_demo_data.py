"""The embedded demo dataset is written by the project, deterministic, valid and split by query."""

from modeling.data.demo_data import demo_dataset_path, write_demo_dataset
from modeling.data.ir_data import load_ir_data
from modeling.data.training_data import load_training_data


def test_demo_dataset_is_deterministic_and_loads(tmp_path):
    first = write_demo_dataset(tmp_path / "a")
    second = write_demo_dataset(tmp_path / "b")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/dev.tsv", "qrels/test.tsv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    splits = {split: load_ir_data(first, split) for split in ("train", "dev", "test")}
    queries = [set(split.queries) for split in splits.values()]
    assert not (queries[0] & queries[1] or queries[0] & queries[2] or queries[1] & queries[2])
    assert all(len(split.queries) >= 90 for split in splits.values())
    assert {grade for docs in splits["test"].qrels.values() for grade in docs.values()} == {1, 2}


def test_demo_dataset_trains_from_its_dev_split(tmp_path):
    data = load_training_data(demo_dataset_path(tmp_path))
    assert data.dev_queries and data.num_pairs > 500
    assert not set(data.pairs) & set(data.dev_queries.values())
