"""evaluate.py end to end on a tiny model and a tiny BEIR folder written here: outputs, cache use, clear errors."""

import json

import pytest
import torch

from modeling import build_model, find_head, save_model
from modeling.cli import evaluate
from tests.test_ir_data import write_jsonl, write_qrels

TOPICS = [
    "red shoe",
    "blue boot",
    "green tea",
    "coffee mug",
    "water bottle",
    "office chair",
    "kitchen table",
    "laptop bag",
]


def tiny_beir(root):
    """8 documents, test/train/dev queries; test queries 0-3 have train-positive documents (seen), 4-7 do not."""
    root.mkdir(parents=True)
    write_jsonl(
        root / "corpus.jsonl",
        [{"_id": f"d{i}", "title": topic, "text": f"a {topic} for the office"} for i, topic in enumerate(TOPICS)],
    )
    words = {"test": "cheap", "train": "warm", "dev": "small"}
    queries = [
        {"_id": f"{split}{i}", "text": f"{topic} {word}"}
        for split, word in words.items()
        for i, topic in enumerate(TOPICS)
    ]
    write_jsonl(root / "queries.jsonl", queries)
    write_qrels(root / "qrels" / "test.tsv", [(f"test{i}", f"d{i}", 1 + i % 2) for i in range(8)])
    write_qrels(root / "qrels" / "train.tsv", [(f"train{i}", f"d{i}", 1) for i in range(4)])
    write_qrels(root / "qrels" / "dev.tsv", [(f"dev{i}", f"d{i}", 1) for i in range(8)])
    return root


@pytest.fixture()
def head_model(tiny, tmp_path):
    model = build_model(tiny, placement="query")
    with torch.no_grad():  # move the head off the identity so trained != base
        for parameter in find_head(model).parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    return save_model(model, tmp_path / "head")


def run_cli(capsys, *args):
    code = evaluate.main([*map(str, args), "--quiet", "--resamples", "200"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_evaluate(capsys, model, data, cache_root, out, *extra):
    """``run_cli`` with the model, data, cache and output folder every end-to-end run gives."""
    return run_cli(capsys, "--model", model, "--data", data, "--cache-dir", cache_root, "--output-dir", out, *extra)


def test_trained_model_end_to_end(tmp_path, capsys, head_model, cache_root):
    data = tiny_beir(tmp_path / "toy")
    out = tmp_path / "out"
    argv = [
        "--model",
        head_model,
        "--data",
        data,
        "--trust-remote-code",
        "--cache-dir",
        cache_root,
        "--output-dir",
        out,
    ]
    code, stdout, stderr = run_cli(capsys, *argv)
    assert code == 0, stderr
    results = json.loads((out / "toy-test.json").read_text())
    assert set(results["systems"]) == {"trained", "bare_encoder", "bm25", "hybrid"}
    assert results["slices"] == {"all": 8, "seen": 4, "unseen": 4}
    assert set(results["systems"]["trained"]) == {"all", "seen", "unseen"}
    assert (
        set(results["p_values"]["vs"]) == {"bare_encoder", "bm25", "hybrid"}
        and results["p_values"]["reference"] == "trained"
    )
    assert set(results["per_query"]["bm25"]) == {f"test{i}" for i in range(8)}
    assert results["slice_of_query"]["test0"] == "seen" and results["slice_of_query"]["test7"] == "unseen"
    fusion = results["settings"]["fusion"]  # the folder has a dev split: normalisation and weight chosen on it
    assert fusion["method"] == f"convex {fusion['normalisation']}" and fusion["normalisation"] in ("min-max", "z-score")
    assert set(fusion["dev_nDCG@10_by_normalisation"]) == {"min-max", "z-score"}
    assert "dev" in results["settings"]["fusion"]["chosen_on"]
    assert results["settings"]["bm25"]["k1"] == 0.9 and results["peak_rss_mb"] > 0 and results["wall_time_s"] > 0
    assert results["systems"]["trained"]["all"]["nDCG@10"] != results["systems"]["bare_encoder"]["all"]["nDCG@10"]
    # every text went through the encoder once: 8 documents (shared by the query-only head) + 16 test/dev queries
    assert results["encoder_calls"] == 8 + 16
    assert "shared with the bare encoder" in results["model"]["documents"]
    for plot in results["plots"]:
        assert (out / plot.split("/")[-1]).read_bytes()[:4] == b"\x89PNG"
    assert "| all | trained | 8 |" in stdout and "| unseen | bm25 | 4 |" in stdout and "k1=0.9, b=0.4" in stdout
    # a second run reads everything from the cache
    code, _, _ = run_cli(capsys, *argv)
    assert code == 0 and json.loads((out / "toy-test.json").read_text())["encoder_calls"] == 0


def test_bare_encoder_uses_rrf_without_dev(tmp_path, capsys, tiny, cache_root):
    data = tiny_beir(tmp_path / "toy")
    (data / "qrels" / "dev.tsv").unlink()
    tiny.save_pretrained(str(tmp_path / "bare"))
    code, stdout, stderr = run_cli(
        capsys, "--model", tmp_path / "bare", "--data", data, "--cache-dir", cache_root, "--train-split", "none"
    )
    assert code == 0, stderr
    results = json.loads((tmp_path / "bare" / "evaluation" / "toy-test.json").read_text())  # default output folder
    assert (
        set(results["systems"]) == {"bare_encoder", "bm25", "hybrid"}
        and results["p_values"]["reference"] == "bare_encoder"
    )
    assert results["slices"] == {"all": 8} and results["settings"]["fusion"]["method"] == "rrf"
    assert "reciprocal rank fusion" in stdout


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: (d / "corpus.jsonl").unlink(), "missing .*corpus.jsonl"),
        (lambda d: write_qrels(d / "qrels" / "test.tsv", []), "'test' is empty"),
        (
            lambda d: write_qrels(d / "qrels" / "test.tsv", [("test0", "nope", 1), ("ghost", "d1", 1)]),
            "1 query id.*'ghost'.*1 document id.*'nope'",
        ),
    ],
)
def test_bad_data_fails_before_work(tmp_path, capsys, tiny, change, message):
    data = tiny_beir(tmp_path / "toy")
    change(data)
    tiny.save_pretrained(str(tmp_path / "bare"))
    code, stdout, stderr = run_cli(capsys, "--model", tmp_path / "bare", "--data", data, "--cache-dir", tmp_path / "c")
    assert code == 2 and stdout == ""
    assert __import__("re").search(message, stderr), stderr
    assert not (tmp_path / "c").exists()  # nothing was encoded


def test_model_errors(tmp_path, capsys, head_model):
    data = tiny_beir(tmp_path / "toy")
    code, _, stderr = run_cli(capsys, "--model", head_model, "--data", data, "--cache-dir", tmp_path / "c")
    assert code == 2 and "--trust-remote-code" in stderr and "projection_head.ProjectionHead" in stderr
    assert "uses custom module code" in stderr  # named before loading, also when the head sits in a Router route
    code, _, stderr = run_cli(capsys, "--model", tmp_path / "missing", "--data", data)
    assert code == 2 and "does not exist" in stderr
    code, _, stderr = run_cli(
        capsys, "--model", head_model, "--data", data, "--split", "validation", "--trust-remote-code"
    )
    assert code == 2 and "qrels/validation.tsv" in stderr


def test_model_without_its_head_code_is_refused_naming_the_file(tmp_path, capsys, head_model):
    data = tiny_beir(tmp_path / "toy")
    (head_model / "frozen_head" / "projection_head.py").unlink()
    args = ("--model", head_model, "--data", data, "--cache-dir", tmp_path / "c", "--trust-remote-code")
    code, _, stderr = run_cli(capsys, *args)
    assert code == 2 and "lacks frozen_head/projection_head.py" in stderr, stderr
    assert not (tmp_path / "c").exists()  # nothing was encoded


def test_option_errors(tmp_path, capsys, tiny):
    data = tiny_beir(tmp_path / "toy")
    (data / "qrels" / "dev.tsv").unlink()
    tiny.save_pretrained(str(tmp_path / "bare"))
    code, _, stderr = run_cli(capsys, "--model", tmp_path / "bare", "--data", data, "--fusion", "convex")
    assert code == 2 and "--dev-split" in stderr and "--fusion-weight" in stderr
    with pytest.raises(SystemExit, match="--card needs --model"):
        evaluate.main(["--data", str(data), "--card"])


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--model",
        "--data",
        "--split",
        "--output-dir",
        "--card",
        "--query-prompt",
        "--document-prompt",
        "--trust-remote-code",
    ):
        assert flag in text


def test_card_gets_the_table_and_plots(tmp_path, capsys, head_model, cache_root):
    data = tiny_beir(tmp_path / "toy")
    code, _, stderr = run_cli(
        capsys, "--model", head_model, "--data", data, "--trust-remote-code", "--cache-dir", cache_root, "--card"
    )
    assert code == 0, stderr
    card = (head_model / "README.md").read_text()
    assert "## Evaluation" in card and "toy" in card
    assert "evaluation/toy-test-scores.png" in card and "evaluation/toy-test-ndcg10-change.png" in card


def test_a_symmetric_model_embeds_the_corpus_through_its_head(tmp_path, capsys, tiny, cache_root):
    """A head on both sides moves documents too: evaluate re-embeds the corpus and says so."""
    model = build_model(tiny, placement="symmetric")
    with torch.no_grad():
        for parameter in find_head(model).parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    path = save_model(model, tmp_path / "symmetric")
    data = tiny_beir(tmp_path / "toy")
    out = tmp_path / "o"
    code, _, stderr = run_cli(
        capsys, "--model", path, "--trust-remote-code", "--data", data, "--cache-dir", cache_root, "--output-dir", out
    )
    assert code == 0, stderr
    results = json.loads((out / "toy-test.json").read_text())
    assert results["model"]["documents"] == "symmetric head: corpus embedded through the document side of the model"
