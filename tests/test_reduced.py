"""Reduced models (issue 13): --out-dim alone, the fixed document route, distillation, the by-document veto."""

from __future__ import annotations

import json
import re

import pytest
import torch
from sentence_transformers import SentenceTransformer
from torch import nn

from modeling.cache.cached_input import prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.training_data import load_training_data
from modeling.model.layout import ModelLayout
from modeling.model.projection_head import ProjectionHead
from modeling.training.distill import distill, start_at_teacher
from modeling.training.pseudo_queries import pseudo_queries
from modeling.training.run import Prepared, Student, StudentCurve, choose, choose_student, unseen_veto
from modeling.training.settings import REDUCED_DEFAULT, TrainSettings, parse_settings
from modeling.training.trial import TrialResult
from tests.training_fixtures import pair_rows, run_train, state_hash, write_jsonl


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("reduced") / "pairs.jsonl", pair_rows(160))


def test_out_dim_alone_trains_the_reduced_default(tmp_path, encoder_dir, pairs):
    assert parse_settings(["--out-dim", "8"]).placement == REDUCED_DEFAULT
    code = run_train(encoder_dir, pairs, tmp_path / "out", tmp_path / "cache", "--out-dim", "8", "--epochs", "2",
                     "--learning-rate", "1e-3")  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert (summary["placement"], summary["out_features"]) == (REDUCED_DEFAULT, 8)
    assert summary["full_width_dev"]["ndcg@10"] > 0  # the full-width teacher's dev score is recorded
    corpus = load_training_data(str(pairs)).corpus
    assert summary["pseudo_queries"] == len(pseudo_queries(corpus, 50_000)) > 0  # one per distinct first sentence
    model = SentenceTransformer(str(tmp_path / "out"), trust_remote_code=True)
    layout = ModelLayout.of(model)
    assert layout.placement == "routes" and layout.document_head.out_features == 8
    assert model.encode_query(["red shoe 1"]).shape == (1, 8) and model.encode_document(["a shoe"]).shape == (1, 8)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "bytes per document" in card and "32 bytes per document" in card
    assert re.search(r"Pseudo-queries distilled\W+[\d,]+ \(first sentences of documents\)", card)
    assert len(summary["average_carves"]) == 5  # the default: the teacher is the mean of 5 runs' heads
    assert summary["anchor"] == ""  # the teacher trains without --anchor-weight (the student has its own term)
    assert "the full-width teacher the reduced model learned from is the mean of 5 heads" in card


def test_out_dim_with_query_placement_or_above_the_encoder_is_refused(tmp_path, encoder_dir, pairs, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_settings(["--out-dim", "8", "--placement", "query"])
    assert stop.value.code == 2 and "query-only head must keep the document dimension" in capsys.readouterr().err
    code = run_train(encoder_dir, pairs, tmp_path / "o", tmp_path / "c", "--out-dim", "100000", "--epochs", "1")
    assert code == 2 and "may keep or reduce the encoder's dimension, not raise it" in capsys.readouterr().err


def test_negative_pseudo_query_count_is_refused(capsys):
    assert parse_settings(["--out-dim", "8", "--pseudo-queries", "0"]).pseudo_queries == 0  # 0 turns them off
    with pytest.raises(SystemExit) as stop:
        parse_settings(["--out-dim", "8", "--pseudo-queries", "-1"])
    assert stop.value.code == 2 and "--pseudo-queries must be >= 0" in capsys.readouterr().err


def test_fixed_documents_keep_the_pca_start_bit_for_bit(tmp_path, encoder_dir, pairs):
    code = run_train(encoder_dir, pairs, tmp_path / "out", tmp_path / "cache", "--out-dim", "8",
                     "--placement", "fixed-documents", "--epochs", "2", "--learning-rate", "3e-3", "--no-interpolate")  # fmt: skip
    assert code == 0
    layout = ModelLayout.of(SentenceTransformer(str(tmp_path / "out"), trust_remote_code=True))
    corpus = load_training_data(str(pairs)).corpus
    cache = EmbeddingCache(prefix_model(SentenceTransformer(str(encoder_dir))), root=tmp_path / "cache")
    start = ProjectionHead(layout.document_head.in_features, 8).fit_pca(cache.get(corpus[:20000]))
    assert state_hash(layout.document_head) == state_hash(start)
    assert layout.head.delta.abs().sum() > 0  # while the query route did move


def test_distillation_loss_decreases():
    torch.manual_seed(0)
    documents, queries = torch.randn(300, 16), torch.randn(80, 16)
    teacher_map = torch.eye(16) + 0.5 * torch.randn(16, 16)
    heads = nn.ModuleDict({"query": ProjectionHead(16, 6), "document": ProjectionHead(16, 6)})
    for head in heads.values():
        head.fit_pca(documents)
    result = distill(heads, heads["query"], heads["document"], lambda x: x @ teacher_map.T, queries, documents,
                     epochs=8, batch_size=16, learning_rate=3e-3)  # fmt: skip
    assert result.losses[-1] < 0.7 * result.losses[0]
    assert len(result.states) == 8


class Scored(nn.Module):
    """A stand-in head with one weight ``w``: the start is 0, the trained state 1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.init, self.out_features, self.in_features = "pca", 4, 8


class FakeEvaluator:
    """nDCG@10 as a function of the head's ``w`` (``score(w)``), in the library evaluator's output format."""

    name = "dev"

    def __init__(self, head, score):
        self.head, self.score = head, score

    def __call__(self, model):
        return {"dev_cosine_ndcg@10": self.score(float(self.head.w.detach()))}


def test_veto_keeps_the_start_when_the_candidate_is_worse_on_by_document_dev():
    head = Scored()
    start = {"w": torch.tensor(0.0)}
    trained = {"w": torch.tensor(1.0)}
    overall = FakeEvaluator(head, lambda w: 0.60 + 0.2 * w)  # training helps on dev as a whole ...
    by_document = FakeEvaluator(head, lambda w: 0.65 - 0.1 * w)  # ... and hurts the queries on new documents
    prepared = Prepared(
        model=None, encoder=None, head=head, cache=None, twin=None, dataset=None, evaluator=overall, guard_pairs=([], []),
        start_state=start, base_dev={"ndcg@10": 0.62}, unseen_evaluator=by_document, base_dev_unseen=0.66,
        start_dev={"ndcg@10": 0.60}, start_dev_unseen=0.65, init="pca", reduced=True,
    )  # fmt: skip
    result = TrialResult(learning_rate=1e-3, weight_decay=0.0, best_dev=0.80, best_epoch=3.0)
    settings = TrainSettings(learning_rates=(1e-3,), weight_decays=(0.0,), out_features=4, placement="two-maps")
    choice = choose(prepared, settings, [result], [trained])
    assert choice.kept_identity and head.w.item() == 0.0  # every interpolation toward the trained head is vetoed
    assert len(choice.vetoes) == 4

    kind = FakeEvaluator(head, lambda w: 0.65 + 0.01 * w)  # the same trial, now better on new documents too
    prepared.unseen_evaluator = kind
    choice = choose(prepared, settings, [result], [trained])
    assert not choice.kept_identity and head.w.item() == 1.0 and not choice.vetoes


def test_unseen_veto_rule():
    assert unseen_veto(0.60, bare=0.70, start=0.65, reduced=True)  # below both by more than the tolerance
    assert not unseen_veto(0.697, bare=0.70, start=0.65, reduced=True)  # within 0.005 of the bare encoder
    assert not unseen_veto(0.66, bare=0.70, start=0.65, reduced=True)  # better than the start it would fall back to
    assert not unseen_veto(0.646, bare=0.70, start=0.65, reduced=True)  # within 0.005 of that start
    assert unseen_veto(0.644, bare=0.70, start=0.65, reduced=True)
    assert not unseen_veto(0.60, bare=0.70, start=0.70, reduced=False)  # full width: QUALITY's rule goes there


def test_stock_format_of_a_routes_model_computes_the_same(tiny, tmp_path):
    from modeling.model.build import build_model
    from modeling.model.stock import export_stock

    sample = torch.randn(50, tiny.get_embedding_dimension())
    model = build_model(tiny, placement="routes", out_features=4, pca_embeddings=sample)
    layout = ModelLayout.of(model)
    with torch.no_grad():
        layout.head.delta.normal_(0, 0.1)  # the two routes now differ
    folder = export_stock(model, tmp_path / "stock")
    stock = SentenceTransformer(str(folder))  # no trust_remote_code
    texts = ["red shoe", "a wooden desk"]
    for encode in ("encode_query", "encode_document"):
        assert torch.allclose(
            torch.as_tensor(getattr(stock, encode)(texts)), torch.as_tensor(getattr(model, encode)(texts)), atol=1e-5
        )


def test_the_pseudo_query_scorer_flag_picks_who_scores_them(tmp_path, encoder_dir, pairs, monkeypatch):
    """--pseudo-scorer bare (default): the pseudo-queries' targets are the bare encoder's scores (the identity on
    pre-head embeddings); teacher: the full-width head's."""
    import modeling.training.run as run_module

    assert parse_settings([]).pseudo_scorer == "bare"
    seen = {}
    real = run_module.distill

    def spy(container, query_head, document_head, teacher, *args, pseudo=None, **kwargs):
        x = torch.randn(3, query_head.in_features)
        seen[scorer] = (torch.equal(pseudo.teacher(x), x), pseudo.teacher is teacher, pseudo.weight)
        return real(container, query_head, document_head, teacher, *args, pseudo=pseudo, **kwargs)

    monkeypatch.setattr(run_module, "distill", spy)
    extra = {"bare": [], "teacher": ["--pseudo-weight", "6", "--anchor-weight", "0.5"]}
    for scorer in ("bare", "teacher"):
        code = run_train(encoder_dir, pairs, tmp_path / scorer, tmp_path / "cache", "--out-dim", "8", "--epochs", "2",
                         "--learning-rate", "3e-3", "--weight-decay", "0", "--average-carves", "1",
                         "--pseudo-scorer", scorer, *extra[scorer])  # fmt: skip
        assert code == 0
    assert seen["bare"] == (True, False, 3.0)
    assert seen["teacher"][1:] == (True, 6.0)  # --pseudo-weight reaches the distillation
    anchors = {name: json.loads((tmp_path / name / "training_summary.json").read_text())["anchor"] for name in extra}
    assert anchors["bare"] == "" and "weight 0.5" in anchors["teacher"]  # a given --anchor-weight anchors the teacher


def test_the_anchor_default_depends_on_the_placement(capsys):
    """--anchor-weight defaults to 2 for a full-width head and to 0 for a distilled model's teacher; a negative
    --pseudo-weight is refused."""
    assert parse_settings([]).anchor_weight == 2.0
    assert parse_settings(["--out-dim", "8"]).anchor_weight == 0.0
    assert parse_settings(["--out-dim", "8", "--placement", "distill-queries"]).anchor_weight == 0.0
    assert parse_settings(["--out-dim", "8", "--anchor-weight", "2"]).anchor_weight == 2.0
    with pytest.raises(SystemExit) as stop:
        parse_settings(["--pseudo-weight", "-1"])
    assert stop.value.code == 2 and "--pseudo-weight must be >= 0" in capsys.readouterr().err


def trained_head(in_features: int, out_features: int | None = None, kind: str = "linear", seed: int = 0):
    """A head moved off its start (random change and bias), as a trained teacher would be."""
    head = ProjectionHead(in_features, out_features, kind=kind, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return head.eval()


def apply(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return head({"sentence_embedding": x})["sentence_embedding"]


def test_the_students_query_map_starts_at_the_teacher_projected_by_the_document_map():
    """A linear teacher: the query map's start is exactly the document map composed with it, on any query (not only
    the few it was read from), and its learned change is zero so training starts there."""
    teacher, documents = trained_head(12), torch.randn(40, 12, generator=torch.Generator().manual_seed(1))
    query_map, document_map = ProjectionHead(12, 4).fit_pca(documents), ProjectionHead(12, 4).fit_pca(documents)
    pca_start = apply(query_map, documents[:3]).clone()
    start_at_teacher(query_map, document_map, lambda x: apply(teacher, x), documents[:3])  # 3 inputs < 12 dims
    fresh = torch.randn(7, 12, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(apply(query_map, fresh), apply(document_map, apply(teacher, fresh)))
    assert not torch.allclose(apply(query_map, documents[:3]), pca_start)
    assert not query_map.delta.any() and not query_map.bias.any()


def test_a_nonlinear_teacher_start_is_the_least_squares_fit_over_the_queries():
    """An MLP teacher is not affine: the start is the best affine fit over the given queries, closer to the
    projected teacher there than the teacher's linearisation at zero."""
    teacher = trained_head(12, kind="mlp")
    queries = torch.randn(200, 12, generator=torch.Generator().manual_seed(3))
    query_map, document_map = ProjectionHead(12, 4).fit_pca(queries), ProjectionHead(12, 4).fit_pca(queries)
    target = apply(document_map, apply(teacher, queries))
    start_at_teacher(query_map, document_map, lambda x: apply(teacher, x), queries)
    fit_error = (apply(query_map, queries) - target).pow(2).mean()
    zero = apply(document_map, apply(teacher, torch.zeros(1, 12)))
    slope = apply(document_map, apply(teacher, torch.eye(12))) - zero
    linearised_error = (queries @ slope + zero - target).pow(2).mean()
    assert fit_error < linearised_error


def test_an_mlp_teacher_is_distilled_from_its_least_squares_start(tmp_path, encoder_dir, pairs, monkeypatch):
    """--kind mlp --out-dim: the teacher is not affine, so the student's query map starts at its least-squares fit;
    the run completes and the saved reduced model embeds queries and documents into the reduced width."""
    fits, real_lstsq = [], torch.linalg.lstsq
    monkeypatch.setattr(torch.linalg, "lstsq", lambda *a, **k: (fits.append(a[0].shape), real_lstsq(*a, **k))[1])
    code = run_train(encoder_dir, pairs, tmp_path / "out", tmp_path / "cache", "--out-dim", "8", "--kind", "mlp",
                     "--epochs", "2", "--learning-rate", "1e-3", "--average-carves", "1")  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["distill_epochs"] is not None and summary["start_dev"]["ndcg@10"] > 0
    assert fits  # the least-squares start, not the exact composition of linear heads
    model = SentenceTransformer(str(tmp_path / "out"), trust_remote_code=True)
    assert model.encode_query(["a query"]).shape == (1, 8) == model.encode_document(["a document"]).shape


def curve(metric: list[float], unseen: list[float], base: float = 0.66) -> StudentCurve:
    return StudentCurve([{"ndcg@10": m, "recall@10": m} for m in metric], unseen, base)


def student_with(curves: list[StudentCurve]) -> Student:
    container = nn.Linear(1, 1, bias=False)
    start = {"weight": torch.zeros(1, 1)}
    container.load_state_dict(start)
    curves[0].states = [{"weight": torch.full((1, 1), float(epoch))} for epoch in range(len(curves[0].dev))]
    return Student(model=None, twin=None, container=container, start_state=start, curves=curves)


def test_the_student_epoch_is_chosen_on_dev_pooled_over_the_carves():
    """One carve alone would stop at epoch 1; pooled with a second carve the best epoch is 3. The student keeps the
    first carve's maps and dev figures at that epoch."""
    first = curve([0.60, 0.70, 0.66, 0.68], [0.65, 0.66, 0.66, 0.66])
    second = curve([0.60, 0.61, 0.70, 0.75], [0.65, 0.66, 0.66, 0.66])
    alone = student_with([first])
    choose_student(alone)
    assert alone.epochs == 1
    both = student_with([first, second])
    choose_student(both)
    assert both.epochs == 3 and both.container.weight.item() == 3.0
    assert both.dev["ndcg@10"] == 0.68 and both.dev_unseen == 0.66 and both.start_dev["ndcg@10"] == 0.60


def test_the_student_veto_reads_the_pooled_by_document_half():
    """Epoch 2 leads on pooled dev but its pooled by-document half is below both the bare encoder and the start by
    more than 0.005: vetoed, and the next best (epoch 1) is kept; nothing above the start keeps the start."""
    first = curve([0.60, 0.65, 0.70], [0.65, 0.655, 0.60])
    second = curve([0.60, 0.64, 0.69], [0.65, 0.650, 0.64])
    student = student_with([first, second])
    choose_student(student)
    assert student.epochs == 1 and student.container.weight.item() == 1.0
    assert len(student.vetoes) == 1 and "epoch 2" in student.vetoes[0] and "pooled over 2 carves" in student.vetoes[0]
    flat = student_with([curve([0.70, 0.69, 0.60], [0.65, 0.65, 0.65])])
    choose_student(flat)
    assert flat.epochs == 0 and flat.container.weight.item() == 0.0 and flat.dev["ndcg@10"] == 0.70


def test_every_carve_of_the_teacher_mean_gets_a_student_curve(tmp_path, encoder_dir, pairs, monkeypatch):
    """--average-carves 3 with --out-dim: the student is distilled from each carve's chosen teacher and scored on
    that carve's dev (three curves), and the epoch and the hybrid weight are chosen from all three."""
    import modeling.training.run as run_module

    chosen_from = []
    real = run_module.choose_student
    monkeypatch.setattr(run_module, "choose_student", lambda student: (chosen_from.append(list(student.curves)),
                                                                       real(student)))  # fmt: skip
    code = run_train(encoder_dir, pairs, tmp_path / "out", tmp_path / "cache", "--out-dim", "8", "--epochs", "2",
                     "--learning-rate", "3e-3", "--weight-decay", "0", "--average-carves", "3")  # fmt: skip
    assert code == 0 and len(chosen_from) == 1
    curves = chosen_from[0]
    assert len(curves) == 3 and all(len(c.dev) == 3 for c in curves)  # the start and 2 epochs, per carve
    assert curves[0].dev[0] != curves[1].dev[0]  # each carve's own dev split
    # the student's hybrid weight is chosen on the three carves' dev queries together, each by its own student
    hybrid = json.loads((tmp_path / "out" / "hybrid.json").read_text())
    dev_queries = sum(len(c.carve.dev_queries) for c in curves)
    assert hybrid["source"].startswith(f"dev splits of 3 carves of the training queries ({dev_queries} queries")
    assert "student" in hybrid["source"]
