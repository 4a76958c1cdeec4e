"""load_ir_data: BEIR folders and datasets sources load the same data; each bad input fails early and says why."""

import json

import pytest

from modeling.data.ir_data import DataError, IRData, available_splits, load_ir_data

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "cats purr"},
    {"_id": "d2", "title": "", "text": "dogs bark"},
    {"_id": "d3", "title": "Tea", "text": " green tea "},
]
QUERIES = [{"_id": "q1", "text": "purring"}, {"_id": "q2", "text": "barking"}, {"_id": "q3", "text": "unjudged"}]
QRELS = {"test": [("q1", "d1", 2), ("q1", "d3", 0), ("q2", "d2", 1)], "train": [("q3", "d3", 1)]}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_qrels(path, rows, header="query-id\tcorpus-id\tscore"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows))


def beir_folder(root, corpus=CORPUS, queries=QUERIES, qrels=QRELS):
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", corpus)
    write_jsonl(root / "queries.jsonl", queries)
    for split, rows in qrels.items():
        write_qrels(root / "qrels" / f"{split}.tsv", rows)
    return root


def hub_folder(root):
    """The BEIR-on-the-Hub layout (mteb/*): README configs corpus / queries / default (qrels splits)."""
    (root / "data").mkdir(parents=True)
    write_jsonl(root / "data" / "corpus.jsonl", CORPUS)
    write_jsonl(root / "data" / "queries.jsonl", QUERIES)
    for split, rows in QRELS.items():
        write_jsonl(
            root / "data" / f"qrels-{split}.jsonl", [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in rows]
        )
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: corpus\n  data_files:\n  - split: corpus\n    path: data/corpus.jsonl\n"
        "- config_name: queries\n  data_files:\n  - split: queries\n    path: data/queries.jsonl\n"
        "- config_name: default\n  data_files:\n  - split: test\n    path: data/qrels-test.jsonl\n"
        "  - split: train\n    path: data/qrels-train.jsonl\n---\n"
    )
    return root


EXPECTED = IRData(
    name="",
    corpus={"d1": "Cats cats purr", "d2": "dogs bark", "d3": "Tea  green tea"},
    queries={"q1": "purring", "q2": "barking"},
    qrels={"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}},
)


def test_beir_folder(tmp_path):
    data = load_ir_data(beir_folder(tmp_path / "toy"))
    assert (data.name, data.corpus, data.queries, data.qrels) == (
        "toy",
        EXPECTED.corpus,
        EXPECTED.queries,
        EXPECTED.qrels,
    )
    assert data.relevant == {"q1": {"d1"}, "q2": {"d2"}}  # grade 0 is judged, not relevant
    assert available_splits(tmp_path / "toy") == ["test", "train"]
    assert load_ir_data(tmp_path / "toy", "train").queries == {"q3": "unjudged"}


def test_datasets_folder_equals_beir_folder(tmp_path):
    source = hub_folder(tmp_path / "hub")
    data = load_ir_data(str(source), "test")
    assert (data.corpus, data.queries, data.qrels) == (EXPECTED.corpus, EXPECTED.queries, EXPECTED.qrels)
    assert available_splits(str(source)) == ["test", "train"]
    with pytest.raises(DataError, match=r"no qrels split 'dev'.*\['test', 'train'\]"):
        load_ir_data(str(source), "dev")


def test_missing_files_are_named(tmp_path):
    folder = beir_folder(tmp_path / "toy")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(DataError, match=r"missing .*queries\.jsonl.*splits found: \['test', 'train'\]"):
        load_ir_data(folder)
    with pytest.raises(DataError, match=r"missing .*qrels/dev\.tsv"):
        load_ir_data(beir_folder(tmp_path / "other"), "dev")


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_ir_data(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        load_ir_data(tmp_path / "empty")


def test_empty_split(tmp_path):
    with pytest.raises(DataError, match="'test' is empty"):
        load_ir_data(beir_folder(tmp_path / "a", qrels={"test": []}))
    with pytest.raises(DataError, match="no relevant"):
        load_ir_data(beir_folder(tmp_path / "b", qrels={"test": [("q1", "d1", 0)]}))


def test_unknown_ids_are_counted_and_shown(tmp_path):
    rows = [("q1", "d1", 1), ("q9", "d1", 1), ("q1", "x1", 1), ("q2", "x2", 1), ("q2", "x1", 1)]
    with pytest.raises(DataError) as error:
        load_ir_data(beir_folder(tmp_path / "toy", qrels={"test": rows}))
    message = str(error.value)
    assert "1 query id(s) not in the queries: 'q9'" in message
    assert "2 document id(s) not in the corpus: 'x1', 'x2'" in message


def test_duplicate_ids(tmp_path):
    with pytest.raises(DataError, match=r"corpus: 1 duplicate id\(s\): 'd1'"):
        load_ir_data(beir_folder(tmp_path / "toy", corpus=[*CORPUS, {"_id": "d1", "text": "again"}]))


def test_non_text_fields(tmp_path):
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: field 'text' must be text, got int"):
        load_ir_data(beir_folder(tmp_path / "a", corpus=[CORPUS[0], {"_id": "d2", "text": 7}, CORPUS[2]]))
    with pytest.raises(DataError, match="field 'title' must be text"):
        load_ir_data(beir_folder(tmp_path / "b", corpus=[{"_id": "d1", "title": ["x"], "text": "t"}, *CORPUS[1:]]))


def test_bad_qrels_rows(tmp_path):
    folder = beir_folder(tmp_path / "toy")
    write_qrels(folder / "qrels" / "test.tsv", [("q1", "d1", "high")])
    with pytest.raises(DataError, match=r"test\.tsv:2: relevance score must be an integer"):
        load_ir_data(folder)
    write_qrels(folder / "qrels" / "test.tsv", [("q1", "d1", 1)], header="qid\tdocid\trel")
    with pytest.raises(DataError, match="expected the header"):
        load_ir_data(folder)
    write_qrels(folder / "qrels" / "test.tsv", [("q1", "d1", 1), ("q1", "d1", 2)])
    with pytest.raises(DataError, match="graded twice"):
        load_ir_data(folder)


def test_load_qrels_only(tmp_path):
    from modeling.data.ir_data import load_qrels

    folder = beir_folder(tmp_path / "toy")
    assert load_qrels(folder, "train") == {"q3": {"d3": 1}}
    assert load_qrels(folder / "qrels" / "test.tsv", "x") == EXPECTED.qrels
    assert load_qrels(str(hub_folder(tmp_path / "hub")), "train") == {"q3": {"d3": 1}}
    with pytest.raises(DataError, match="does not exist"):
        load_qrels(tmp_path / "none.tsv", "train")
    with pytest.raises(DataError, match=r"no qrels/dev\.tsv"):
        load_qrels(folder, "dev")
