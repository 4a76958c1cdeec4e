"""evaluate.py's edge cases (issue 9 items 7 and 10) and the hybrid weight's sources: each fails on the old code."""

import json

import pytest

from modeling.evaluation import pipeline
from modeling.evaluation.significance import paired_p_value
from tests.test_evaluate_cli import head_model, run_cli, run_evaluate, tiny_beir  # noqa: F401 (a fixture)
from tests.test_ir_data import write_qrels


@pytest.fixture()
def bare(tiny, tmp_path):
    tiny.save_pretrained(str(tmp_path / "bare"))
    return tmp_path / "bare"


def no_model_load(monkeypatch):
    """Input errors must be found before the model loads."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(pipeline, "load_model", refuse)


def test_one_query_gets_no_p_value_instead_of_a_crash():
    assert paired_p_value([0.9], [0.1]) is None  # scipy's permutation test needs two observations
    assert paired_p_value([0.9, 0.5], [0.1, 0.5]) is not None


def test_a_one_query_slice_reports_n_a(tmp_path, capsys, head_model, cache_root):  # noqa: F811
    """test0 alone unseen, where the trained model and the others differ: scipy raised after all the work."""
    data = tiny_beir(tmp_path / "toy")
    write_qrels(data / "qrels" / "train.tsv", [(f"train{i}", f"d{i}", 1) for i in range(1, 8)])
    out = tmp_path / "o"
    code, stdout, stderr = run_evaluate(capsys, head_model, data, cache_root, out, "--trust-remote-code")
    assert code == 0, stderr
    results = json.loads((out / "toy-test.json").read_text())
    assert results["slices"]["unseen"] == 1
    assert all(p["unseen"] is None for p in results["p_values"]["vs"].values())
    assert "| unseen | bm25 | 1 | " in stdout and "n/a (1 query)" in stdout


def test_queries_without_a_relevant_document_are_warned_about(tmp_path, capsys, bare, cache_root):
    data = tiny_beir(tmp_path / "toy")
    rows = [(f"test{i}", f"d{i}", 1) for i in range(7)] + [("test7", "d7", 0)]
    write_qrels(data / "qrels" / "test.tsv", rows)
    code, _stdout, stderr = run_evaluate(capsys, bare, data, cache_root, tmp_path / "o")
    assert code == 0, stderr
    assert "1 of 8 queries have no relevant" in stderr and "test7" in stderr
    results = json.loads((tmp_path / "o" / "toy-test.json").read_text())
    assert results["dataset"]["queries_without_relevant"] == ["test7"]


def test_a_late_failure_keeps_the_json(tmp_path, capsys, bare, cache_root, monkeypatch):
    data = tiny_beir(tmp_path / "toy")

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(pipeline, "plot_metric_change", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        run_evaluate(capsys, bare, data, cache_root, tmp_path / "o")
    results = json.loads((tmp_path / "o" / "toy-test.json").read_text())
    assert results["systems"]["bm25"]["all"]["nDCG@10"] is not None


@pytest.mark.parametrize("split", ["../qrels/test", "qrels/test", ".."])
def test_a_split_path_is_refused_before_the_model_loads(tmp_path, capsys, bare, monkeypatch, split):
    data = tiny_beir(tmp_path / "toy")
    no_model_load(monkeypatch)
    code, _stdout, stderr = run_cli(
        capsys, "--model", bare, "--data", data, "--split", split, "--output-dir", tmp_path / "o"
    )
    assert code == 2 and "--split must be a split name" in stderr, stderr


def test_an_output_dir_naming_a_file_is_refused_before_the_model_loads(tmp_path, capsys, bare, monkeypatch):
    data = tiny_beir(tmp_path / "toy")
    (tmp_path / "taken").write_text("not a folder")
    no_model_load(monkeypatch)
    for target in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        code, _, stderr = run_cli(capsys, "--model", bare, "--data", data, "--output-dir", target)
        assert code == 2 and "is a file, not a folder" in stderr, stderr


def test_a_latin1_corpus_names_the_file(tmp_path, capsys, bare, monkeypatch):
    data = tiny_beir(tmp_path / "toy")
    with (data / "corpus.jsonl").open("ab") as handle:
        handle.write('{"_id": "d9", "title": "caf\u00e9", "text": "cr\u00e8me"}\n'.encode("latin-1"))
    no_model_load(monkeypatch)
    code, _, stderr = run_cli(capsys, "--model", bare, "--data", data, "--output-dir", tmp_path / "o")
    assert code == 2 and "corpus.jsonl" in stderr and "UTF-8" in stderr, stderr


@pytest.mark.parametrize("flag", ["--model", "--data"])
@pytest.mark.parametrize("value", ["nope.csv", "./nope", "runs/x/nope"])
def test_a_missing_relative_path_is_a_missing_file(tmp_path, capsys, bare, monkeypatch, flag, value):
    data = tiny_beir(tmp_path / "toy")
    monkeypatch.chdir(tmp_path)
    no_model_load(monkeypatch)
    args = {"--model": str(bare), "--data": str(data), flag: value}
    code, _, stderr = run_cli(capsys, *[item for pair in args.items() for item in pair])
    assert code == 2 and f"{flag} {value} does not exist" in stderr, stderr


def write_hybrid(model_dir, weight, normalisation="min-max"):
    (model_dir / "hybrid.json").write_text(
        json.dumps(
            {
                "dense_weight": weight,
                "normalisation": normalisation,
                "source": "dev split of training, 5 queries",
                "dev_ndcg@10": 0.61,
            }
        )
    )


def test_fusion_weight_order_flag_then_dev_split_then_hybrid_json(tmp_path, capsys, bare, cache_root):
    data = tiny_beir(tmp_path / "toy")
    write_hybrid(bare, 0.3)
    common = ["--model", bare, "--data", data, "--cache-dir", cache_root, "--output-dir", tmp_path / "o"]

    def fusion(*extra):
        code, stdout, stderr = run_cli(capsys, *common, *extra)
        assert code == 0, stderr
        return json.loads((tmp_path / "o" / "toy-test.json").read_text())["settings"]["fusion"], stdout

    chosen, _ = fusion("--fusion-weight", "0.8")
    assert chosen["dense_weight"] == 0.8 and "--fusion-weight" in chosen["weight_from"]
    chosen, _ = fusion()  # the data has a dev split: it wins over hybrid.json
    assert "dev split" in chosen["weight_from"] and "chosen_on" in chosen
    chosen, stdout = fusion("--dev-split", "none")
    assert chosen["method"] == "convex min-max" and chosen["dense_weight"] == 0.3
    assert "hybrid.json" in chosen["weight_from"] and "dev split of training, 5 queries" in chosen["weight_from"]
    assert "hybrid.json" in stdout
    write_hybrid(bare, 0.3, "z-score")  # the saved normalisation is used, and the flag overrides it
    chosen, stdout = fusion("--dev-split", "none")
    assert chosen["method"] == "convex z-score" and chosen["normalisation"] == "z-score" and "z-score" in stdout
    chosen, _ = fusion("--dev-split", "none", "--fusion-normalisation", "min-max")
    assert chosen["method"] == "convex min-max" and chosen["dense_weight"] == 0.3
    (bare / "hybrid.json").unlink()
    chosen, _ = fusion("--dev-split", "none")
    assert chosen["method"] == "rrf"


def test_a_bad_hybrid_json_is_an_input_error(tmp_path, capsys, bare, monkeypatch):
    data = tiny_beir(tmp_path / "toy")
    write_hybrid(bare, 1.7)
    code, _, stderr = run_cli(
        capsys, "--model", bare, "--data", data, "--dev-split", "none", "--output-dir", tmp_path / "o"
    )
    assert code == 2 and "hybrid.json" in stderr and "dense_weight" in stderr


def test_query_batches_give_the_same_numbers(tmp_path, capsys, bare, cache_root):
    """Small query batches, search passes and corpus blocks (read from the cache) give the numbers of one of each."""
    data = tiny_beir(tmp_path / "toy")
    outputs = []
    for batch, search_batch, doc_chunk in (("3", "2", "3"), ("128", "4096", "16384")):
        out = tmp_path / f"o{batch}"
        code, _, stderr = run_evaluate(
            capsys, bare, data, cache_root, out,
            "--query-batch", batch, "--search-batch", search_batch, "--doc-chunk", doc_chunk,
        )  # fmt: skip
        assert code == 0, stderr
        results = json.loads((out / "toy-test.json").read_text())
        outputs.append((results["per_query"], results["systems"], results["p_values"]))
    assert outputs[0] == outputs[1]


def test_faiss_search_matches_exact_through_query_batches(tmp_path, capsys, bare, cache_root):
    pytest.importorskip("faiss")
    data = tiny_beir(tmp_path / "toy")
    outputs = []
    for search in ("exact", "faiss"):
        out = tmp_path / search
        code, _, stderr = run_evaluate(capsys, bare, data, cache_root, out, "--search", search, "--query-batch", "3")
        assert code == 0, stderr
        outputs.append(json.loads((out / "toy-test.json").read_text())["systems"])
    assert outputs[0].keys() == outputs[1].keys()
    for system in outputs[0]:
        for metric, value in outputs[0][system]["all"].items():
            assert outputs[1][system]["all"][metric] == pytest.approx(value, abs=1e-6)
