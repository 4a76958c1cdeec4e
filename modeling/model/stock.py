"""The stock format: a linear head saved as sentence-transformers' own ``Dense``, so no remote code is needed.

A ``linear`` ProjectionHead is an affine map, ``y = (W0 + D) x + (b0 + b)``, and the library's ``Dense`` (identity
activation) holds exactly that function: with an identity start as ``Dense(use_residual=True)`` with weight ``D`` and
bias ``b`` (its output is ``D x + b + x``, so a later fine-tune of the Dense still decays toward the identity), else
as a plain ``Dense`` with weight ``W0 + D`` and bias ``b0 + b`` (a reduced PCA or random start). The query placement
uses the library's ``Router`` with an empty document route. ``modules.json`` then names only ``sentence_transformers.*``
types and ``SentenceTransformer(path)`` loads the model without ``trust_remote_code``, where deployments refuse it
(hosted inference, embedding servers, security policies). An ``mlp`` head has a non-linear branch that ``Dense`` cannot
hold: train it with ``--kind linear`` to get a stock model.

    python -m modeling.model.stock SRC_DIR DST_DIR     # convert a saved custom-format model folder
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Router
from torch import nn

from modeling.model.code_files import missing_code_files, module_types
from modeling.model.layout import ModelLayout, like

logger = logging.getLogger(__name__)

FORMATS = ("custom", "stock")
STOCK_PREFIX = "sentence_transformers."


class StockFormatError(ValueError):
    """The model cannot be saved with stock modules only (the message says what to do instead)."""


def check_stock_compatible(kind: str) -> None:
    """Raise before any work when a head of ``kind`` has no stock equivalent (train.py calls it on its flags)."""
    if kind != "linear":
        raise StockFormatError(
            f"--format stock needs --kind linear: a {kind!r} head has a non-linear branch that sentence-transformers' "
            "own Dense module cannot hold. Train with --kind linear, or keep --format custom (loads with "
            "trust_remote_code=True)."
        )


def to_dense(head: nn.Module) -> Dense:
    """The library's ``Dense`` computing exactly what the linear ``ProjectionHead`` ``head`` computes."""
    if type(head).__name__ != "ProjectionHead":
        raise StockFormatError(f"Expected a ProjectionHead, got {type(head).__name__}.")
    check_stock_compatible(head.kind)
    base_weight, delta = head.base_weight.detach().float(), head.delta.detach().float()
    bias = (head.base_bias + head.bias).detach().float().clone()
    identity_start = head.in_features == head.out_features and torch.equal(base_weight, torch.eye(head.in_features))
    dense = Dense(
        head.in_features,
        head.out_features,
        bias=True,
        activation_function=nn.Identity(),
        init_weight=(delta if identity_start else base_weight + delta).clone(),
        init_bias=bias,
        use_residual=identity_start,
    )
    return dense.to(head.delta.device)


def to_stock(model: SentenceTransformer) -> SentenceTransformer:
    """A new model with the same encoder modules and a stock ``Dense`` (in the library's ``Router`` for queries)."""
    layout = ModelLayout.of(model)
    if layout.head is None:
        raise StockFormatError("This model has no projection head: a bare encoder is already in the stock format.")
    if isinstance(layout.head, Dense):
        return model
    dense = to_dense(layout.head)
    if layout.placement == "query":
        head_module = Router.for_query_document(query_modules=[dense], document_modules=[])
    else:
        head_module = dense
    stock = like(model, [*layout.prefix, head_module, *layout.tail()[1:]])
    card = model.model_card_data
    if hasattr(card, "head"):  # our card data: same facts, saying which format this is
        card.head = {**card.head, "format": "stock"}
        card.limitations = [item for item in card.limitations if "projection_head.py" not in item]
        stock.model_card_data = card
        card.register_model(stock)
        stock._model_card_text = None
    return stock


def export_stock(model: SentenceTransformer, output_dir: str | Path) -> Path:
    """Save ``model`` (a linear head, either placement) in the stock format; returns the folder."""
    output_dir = Path(output_dir)
    stock = to_stock(model)
    stock.save_pretrained(str(output_dir))
    check_stock_folder(output_dir)
    _follow_umask(output_dir)
    return output_dir


def is_stock_folder(folder: str | Path) -> bool:
    return all(kind.startswith(STOCK_PREFIX) for kind in module_types(folder))


def check_stock_folder(folder: Path) -> None:
    foreign = [kind for kind in module_types(folder) if not kind.startswith(STOCK_PREFIX)]
    if foreign:
        raise RuntimeError(f"{folder} names non-library module types {foreign}; it would need trust_remote_code.")


# Sentences of a custom-format card (model_card/template.md and model_card/prepare.py) and their stock versions.
_CARD_REPLACEMENTS = (
    (re.compile(r", trust_remote_code=True\)"), ")"),
    (re.compile(r"^\*\*Format: custom\.\*\*.*$", re.MULTILINE), "STOCK_FORMAT_SENTENCE"),
    (
        re.compile(r"^Then load the model and run inference\. `trust_remote_code=True` is required.*$", re.MULTILINE),
        "Then load the model and run inference (no `trust_remote_code` needed: the model uses the library's own modules).",
    ),
    (re.compile(r"^- Loading runs code from this repository.*$\n?", re.MULTILINE), ""),
    (re.compile(r"\bProjectionHead\("), "Dense("),
)


def stock_card_text(text: str, sentence: str) -> str:
    """The README of a custom-format model, rewritten for the stock format of the same model."""
    from modeling.integrations.snippets import STACK_END, STACK_START, section

    start, end = text.find(STACK_START), text.find(STACK_END)
    if 0 <= start < end:  # the snippets, rendered again without trust_remote_code
        model_id = re.search(r'SentenceTransformer\("([^"]+)"', text)
        stack = section(model_id.group(1) if model_id else "org/name", trust_remote_code=False)
        text = text[: start + len(STACK_START)] + "\n" + stack + text[end:]
    for pattern, replacement in _CARD_REPLACEMENTS:
        new = sentence if replacement == "STOCK_FORMAT_SENTENCE" else replacement
        text = pattern.sub(lambda _, new=new: new, text)  # a function: the sentence's backticks stay literal
    return text


STOCK_SENTENCE = (
    "**Format: stock.** The head is sentence-transformers' own `Dense` module{router}, so "
    "`SentenceTransformer(...)` loads this model without `trust_remote_code` and no code from this repository runs."
)


def convert_folder(source: str | Path, destination: str | Path) -> Path:
    """Convert a saved custom-format model folder to the stock format (loads ``source``'s own head code)."""
    source, destination = Path(source), Path(destination)
    if not (source / "modules.json").is_file():
        raise ValueError(f"{source} is not a saved sentence-transformers model (no modules.json).")
    if destination.exists() and any(destination.iterdir()):
        raise ValueError(f"{destination} is not empty; pick a new folder for the stock model.")
    if is_stock_folder(source):
        raise ValueError(f"{source} is already in the stock format.")
    missing = missing_code_files(source)
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}, the head's code named in its config; save it again.")
    model = SentenceTransformer(str(source), trust_remote_code=True, device="cpu")
    stock = to_stock(model)
    stock._model_card_text = None
    stock.save_pretrained(str(destination), create_model_card=False)
    check_stock_folder(destination)
    readme = source / "README.md"
    if readme.is_file():
        router = " inside the library's `Router` (query route)" if ModelLayout.of(stock).placement == "query" else ""
        text = stock_card_text(readme.read_text(encoding="utf8"), STOCK_SENTENCE.format(router=router))
        (destination / "README.md").write_text(text, encoding="utf8")
    evaluation = source / "evaluation"
    for plot in sorted(evaluation.glob("*.png")) + sorted(evaluation.glob("*.svg")):
        (destination / "evaluation").mkdir(exist_ok=True)
        (destination / "evaluation" / plot.name).write_bytes(plot.read_bytes())
    _follow_umask(destination)
    return destination


def _follow_umask(folder: Path) -> None:
    """safetensors writes weights 0600; give every file the mode the umask gives (as the configs have)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~umask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling.model.stock",
        description="Convert a saved model with a linear projection head to the stock format "
        "(sentence-transformers' own Dense/Router; loads without trust_remote_code). "
        "SRC_DIR's own head code (frozen_head/projection_head.py) is imported to read the head.",
    )
    parser.add_argument("source", metavar="SRC_DIR", help="a model folder saved by train.py (custom format)")
    parser.add_argument("destination", metavar="DST_DIR", help="a new or empty folder for the stock model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        folder = convert_folder(args.source, args.destination)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"saved the stock model to {folder}; load it with SentenceTransformer({str(folder)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
