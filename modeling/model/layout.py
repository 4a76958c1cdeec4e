"""The one description of a model's layout: encoder prefix, head, placement, trailing Normalize.

Every model this project builds, trains, evaluates or documents is one of

- a bare encoder: ``[prefix..., (Normalize)]``;
- ``symmetric``: ``[prefix..., head, (Normalize)]``;
- ``query``: ``[prefix..., Router(query=[head], document=[]), (Normalize)]``;

where ``prefix`` is the frozen encoder up to the sentence embedding (e.g. ``[Transformer, Pooling]``) and the head
is a ``ProjectionHead`` or, in the stock format, the library's ``Dense``. ``ModelLayout.of(model)`` reads that
from any loaded model (also one whose head class came in through remote code, which is a different class object),
and ``ModelLayout.to_model`` builds one; nothing else in the project works the boundary out on its own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Module, Router
from sentence_transformers.base.modules.normalize import Normalize
from torch import nn

PLACEMENTS = ("query", "symmetric")
HEAD_CLASS_NAMES = ("ProjectionHead", "Dense")


def is_head(module: nn.Module) -> bool:
    """A projection head: ours (by class name, since a remote-code copy is another class object) or a stock Dense."""
    return isinstance(module, Dense) or type(module).__name__ == "ProjectionHead"


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, and eval mode pinned: the trainer calls ``model.train()`` every step, which would
    otherwise switch dropout on inside the frozen encoder and make its output noisy."""
    module.requires_grad_(False)
    for sub in module.modules():
        sub.train = functools.partial(
            _stay_in_eval, sub
        )  # a partial pickles (multi-process pool); a bound method does not
        nn.Module.train(sub, False)
    return module


def like(template: SentenceTransformer, modules: list[Module], model_card_data=None) -> SentenceTransformer:
    """A model of ``modules`` with the template's device, prompts and similarity (the one place this is spelled out)."""
    return SentenceTransformer(
        modules=modules,
        device=str(template.device),
        prompts=dict(template.prompts),
        default_prompt_name=template.default_prompt_name,
        similarity_fn_name=template.similarity_fn_name,
        model_card_data=model_card_data,
    )


@dataclass
class ModelLayout:
    """Where a model's parts are. ``head`` and ``placement`` are ``None`` for a bare encoder."""

    prefix: list[Module]
    head: Module | None
    placement: str | None
    normalize: bool
    container: Module | None = None  # the model's own Router around the head, when read from a model

    @classmethod
    def of(cls, model: SentenceTransformer) -> ModelLayout:
        modules = list(model)
        normalize = bool(modules) and isinstance(modules[-1], Normalize)
        body = modules[:-1] if normalize else modules
        for index, module in enumerate(body):
            if isinstance(module, Router):
                if index != len(body) - 1:
                    raise ValueError("Unexpected layout: modules after the Router (other than Normalize).")
                heads = [m for m in module.modules() if m is not module and is_head(m)]
                if len(heads) != 1:
                    raise ValueError(f"Unexpected layout: the Router holds {len(heads)} heads, expected 1.")
                return cls(body[:index], heads[0], "query", normalize, container=module)
            if is_head(module):
                if index != len(body) - 1:
                    raise ValueError("Unexpected layout: modules after the head (other than Normalize).")
                return cls(body[:index], module, "symmetric", normalize)
        return cls(body, None, None, normalize)

    @property
    def head_module(self) -> Module | None:
        """What sits between the prefix and Normalize: the head itself, or a Router holding it."""
        if self.head is None:
            return None
        if self.placement == "symmetric":
            return self.head
        if self.container is not None:
            return self.container
        return Router.for_query_document(query_modules=[self.head], document_modules=[])

    def tail(self) -> list[Module]:
        """Everything after the prefix, as new containers around the same head (never a copy of its weights)."""
        head = self.head_module
        return [*([head] if head is not None else []), *([Normalize()] if self.normalize else [])]

    def to_model(
        self, template: SentenceTransformer, prefix: list[Module] | None = None, model_card_data=None
    ) -> SentenceTransformer:
        """``prefix + tail``; pass another ``prefix`` (e.g. a cache look-up) to swap the encoder out."""
        return like(template, [*(self.prefix if prefix is None else prefix), *self.tail()], model_card_data)

    def bare(self, template: SentenceTransformer) -> SentenceTransformer:
        """The bare encoder under the head (its prefix, and Normalize when the model normalises)."""
        return ModelLayout(self.prefix, None, None, self.normalize).to_model(template)

    def describe(self) -> dict[str, Any]:
        return {"placement": self.placement, "normalize": self.normalize, "head": type(self.head).__name__}
