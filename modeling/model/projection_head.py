"""A trainable projection head for a frozen sentence-transformers encoder.

This file ships inside every saved model, as ``frozen_head/projection_head.py`` under the model's root, and is
what ``SentenceTransformer(path_or_hub_id, trust_remote_code=True)`` imports from there. It must stay
self-contained: standard library, torch and sentence-transformers only.

Why it can be trained without collapsing: every kind starts as (or as close as possible to) the
encoder it sits on, so step 0 retrieves exactly as well as the bare encoder and training only has to
move away from a good point, never find one from a random start.

- ``linear``: ``y = (W0 + D) x + b``. ``W0`` is a fixed buffer, ``D`` and ``b`` are trained and start at
  zero. Weight decay on ``D`` therefore pulls the map back toward its start (the identity when the
  dimension is kept), which regularises a head trained on a few thousand pairs.
- ``mlp``: the linear map above plus a residual branch ``U2 act(U1 x + c1)`` whose output layer
  ``U2`` starts at zero, so the branch adds nothing at step 0 but receives gradients at once.
- Reduced output (``out_features < in_features``, e.g. 384 -> 128): ``W0`` holds the top principal
  directions of sample embeddings (centred PCA: ``b0 = -W0 mean``) when ``fit_pca`` is given data, else
  random orthonormal rows (a Johnson-Lindenstrauss projection). Measured at step 0 with
  all-MiniLM-L6-v2 on BEIR SciFact test, nDCG@10 (full 384-d: 0.6451): PCA-128 0.6340 (98% kept),
  random-128 0.5846; PCA-64 0.5566, PCA-192 0.6354 (``benchmarks/reduced_step0.py``).
- ``init="default"`` reproduces the naive recipe for comparison only: PyTorch's default random init, no
  identity start and no zero-init residual branch.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from typing import Any

import torch
from sentence_transformers.base.modules import Module
from torch import Tensor, nn

__all__ = ["ProjectionHead"]

KINDS = ("linear", "mlp")
INITS = ("identity", "random", "pca", "default")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
# Marks the saved model's root so the head can put its own source file under it (see ``save``).
ROOT_MARKER = "config_sentence_transformers.json"
# Where this file goes, relative to the model's root, and the module name the saved type records (see the end).
SOURCE_FILE = "frozen_head/projection_head.py"
MODULE_REF = SOURCE_FILE.removesuffix(".py")


class ProjectionHead(Module):
    """Transforms ``features["sentence_embedding"]`` in place; see the module docstring for the kinds.

    Args:
        in_features: Width of the encoder's sentence embedding (384 for all-MiniLM-L6-v2).
        out_features: Width of the output; defaults to ``in_features``.
        kind: ``"linear"`` or ``"mlp"``.
        hidden_features: Width of the MLP branch (``kind="mlp"``); defaults to ``2 * in_features``.
        activation: Activation of the MLP branch: one of ``gelu``, ``relu``, ``tanh``, ``silu``.
        dropout: Dropout on the head's input while training (0 disables it).
        init: How ``W0`` was initialised: ``identity``, ``random``, ``pca``, or ``default`` (the naive
            random-init recipe, kept to show what goes wrong); recorded for the card.
        seed: Seed of the random parts of the initialisation, so a build is reproducible.
    """

    config_keys: list[str] = [
        "in_features",
        "out_features",
        "kind",
        "hidden_features",
        "activation",
        "dropout",
        "init",
        "seed",
    ]
    config_file_name = "config.json"

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        kind: str = "linear",
        hidden_features: int | None = None,
        activation: str = "gelu",
        dropout: float = 0.0,
        init: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        out_features = in_features if out_features is None else out_features
        if kind not in KINDS:
            raise ValueError(f"ProjectionHead kind must be one of {KINDS}, got {kind!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"ProjectionHead activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        if not 0 < out_features <= in_features:
            raise ValueError(
                f"ProjectionHead out_features must be in [1, in_features={in_features}], got {out_features}: "
                "a head may keep or reduce the encoder's dimension, not raise it."
            )
        if init is None:
            init = "identity" if out_features == in_features else "random"
        if init not in INITS:
            raise ValueError(f"ProjectionHead init must be one of {INITS}, got {init!r}.")
        if init == "identity" and out_features != in_features:
            raise ValueError("init='identity' needs out_features == in_features; use 'random' or 'pca' to reduce.")
        self.in_features = in_features
        self.out_features = out_features
        self.kind = kind
        self.hidden_features = (hidden_features or 2 * in_features) if kind == "mlp" else None
        self.activation = activation
        self.dropout = float(dropout)
        self.init = init
        self.seed = int(seed)

        generator = torch.Generator().manual_seed(self.seed)
        self.register_buffer("base_weight", self._initial_weight(generator))
        self.register_buffer("base_bias", torch.zeros(out_features))
        self.delta = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.input_dropout = nn.Dropout(self.dropout)
        if kind == "mlp":
            self.up = nn.Linear(in_features, self.hidden_features)
            self.act = ACTIVATIONS[activation]()
            self.down = nn.Linear(self.hidden_features, out_features)
            with torch.no_grad():  # seeded default init for ``up``; the branch output starts at zero
                bound = in_features**-0.5
                self.up.weight.uniform_(-bound, bound, generator=generator)
                self.up.bias.uniform_(-bound, bound, generator=generator)
                if init != "default":
                    self.down.weight.zero_()
                    self.down.bias.zero_()
        if init == "default":  # torch's nn.Linear init on the main map too: nothing anchors step 0 to the encoder
            with torch.no_grad():
                reference = nn.Linear(in_features, out_features)
                self.delta.copy_(reference.weight)
                self.bias.copy_(reference.bias)

    def _initial_weight(self, generator: torch.Generator) -> Tensor:
        if self.init == "identity":
            return torch.eye(self.in_features)
        if self.init == "default":
            return torch.zeros(self.out_features, self.in_features)
        # Random orthonormal rows: a distance-preserving (Johnson-Lindenstrauss) start; "pca" replaces it in fit_pca.
        gaussian = torch.randn(self.in_features, self.out_features, generator=generator)
        q, _ = torch.linalg.qr(gaussian)
        return q.T.contiguous()

    @torch.no_grad()
    def fit_pca(self, embeddings: Tensor) -> ProjectionHead:
        """Set ``W0`` to the top ``out_features`` principal directions of ``embeddings`` (centred).

        Only meaningful for a reduced head; the step-0 model then keeps the most variance a linear
        ``out_features``-dim map can.
        """
        if self.out_features == self.in_features:
            raise ValueError("fit_pca is for a reduced head (out_features < in_features); this head keeps the width.")
        x = torch.as_tensor(embeddings, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"fit_pca needs embeddings of shape (n, {self.in_features}), got {tuple(x.shape)}.")
        if x.shape[0] < self.out_features:
            raise ValueError(f"fit_pca needs at least out_features={self.out_features} embeddings, got {x.shape[0]}.")
        mean = x.mean(dim=0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        self.base_weight.copy_(vh[: self.out_features])
        self.base_bias.copy_(-(self.base_weight @ mean))
        self.init = "pca"
        return self

    def forward(self, features: dict[str, Tensor], **kwargs: Any) -> dict[str, Tensor]:
        x = features["sentence_embedding"]
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"ProjectionHead expects {self.in_features}-dim sentence embeddings but got {x.shape[-1]}-dim ones: "
                "this head was trained for another encoder. Train a new head for this encoder."
            )
        x = self.input_dropout(x)
        y = nn.functional.linear(x, self.base_weight + self.delta, self.base_bias + self.bias)
        if self.kind == "mlp":
            y = y + self.down(self.act(self.up(x)))
        features["sentence_embedding"] = y
        return features

    def get_embedding_dimension(self) -> int:
        return self.out_features

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def on_model_ready(self, model: Any) -> None:
        """Fail at load time, with a clear message, when the encoder below has another width."""
        below = _dimension_below(model, self)
        if below is not None and below != self.in_features:
            raise ValueError(
                f"This ProjectionHead was built for {self.in_features}-dim embeddings, but the encoder it sits on "
                f"produces {below}-dim embeddings. A head only works on the encoder it was trained for."
            )

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Save config and safetensors weights, and put this file at ``SOURCE_FILE`` under the model's root.

        Stock sentence-transformers copies a dynamically loaded module's source into the module's
        subfolder, where the loader never looks, and a Router records a ``transformers_modules...``
        type. Recording the class as ``frozen_head/projection_head.ProjectionHead`` (see the end of this
        file) and writing this file to ``frozen_head/projection_head.py`` beside
        ``config_sentence_transformers.json`` makes every save load again with ``trust_remote_code=True``,
        with or without this package installed.
        """
        if not safe_serialization:
            raise ValueError("ProjectionHead saves safetensors only; call save with safe_serialization=True.")
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=True)
        _follow_umask(os.path.join(output_path, "model.safetensors"))  # safetensors writes 0600
        root = _model_root(output_path)
        if root is not None:
            target = os.path.join(root, *SOURCE_FILE.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(__file__, target)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> ProjectionHead:
        """Load config and weights; a file that cannot be read or holds NaN/inf fails here, naming the file."""
        hub_kwargs = {
            key: kwargs[key] for key in ("token", "cache_folder", "revision", "local_files_only") if key in kwargs
        }
        config = cls.load_config(model_name_or_path=model_name_or_path, subfolder=subfolder, **hub_kwargs)
        head = cls(**{key: value for key, value in config.items() if key in cls.config_keys})
        where = cls.load_file_path(model_name_or_path, filename="model.safetensors", subfolder=subfolder, **hub_kwargs)
        where = where or os.path.join(str(model_name_or_path), subfolder, "model.safetensors")
        try:
            cls.load_torch_weights(model_name_or_path, subfolder=subfolder, model=head, **hub_kwargs)
        except Exception as error:
            raise ValueError(
                f"Cannot read the projection head's weights {where}: {type(error).__name__}: {error}. "
                "The file is damaged or incomplete; download or save the model again."
            ) from error
        broken = [name for name, tensor in head.state_dict().items() if not torch.isfinite(tensor).all()]
        if broken:
            raise ValueError(
                f"The projection head's weights {where} hold NaN or infinite values (in {', '.join(broken)}); "
                "they would give NaN embeddings. The training run diverged or the file is damaged."
            )
        return head

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickle by value when the class cannot be found by name (the multi-process pool's workers).

        The class is recorded as ``frozen_head/projection_head.ProjectionHead``, a module name that exists only as a
        file in the model folder (loaded as remote code), never in ``sys.modules``, so a worker cannot import it.
        The pickle then carries this file's source, the config and the weights, and the worker rebuilds the head.
        """
        cls = type(self)
        if getattr(sys.modules.get(cls.__module__), cls.__name__, None) is cls:
            return super().__reduce_ex__(protocol)
        with open(__file__, encoding="utf8") as source_file:
            source = source_file.read()
        state = {name: tensor.detach().cpu() for name, tensor in self.state_dict().items()}
        rebuild = (
            "(lambda namespace: (exec(source, namespace), namespace['ProjectionHead']._rebuild(config, state, training))[1])"
            "({'__name__': 'projection_head'})"
        )
        return eval, (
            rebuild,
            {"source": source, "config": self.get_config_dict(), "state": state, "training": self.training},
        )

    def __deepcopy__(self, memo: dict) -> ProjectionHead:
        """An ordinary deep copy (same class object), not the by-value pickle above."""
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__dict__, memo))
        return copied

    @classmethod
    def _rebuild(cls, config: dict[str, Any], state: dict[str, Tensor], training: bool) -> ProjectionHead:
        head = cls(**config)
        head.load_state_dict(state)
        return head.train(training)

    def get_config_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.config_keys}

    def __repr__(self) -> str:
        config = {key: value for key, value in self.get_config_dict().items() if value is not None}
        return f"ProjectionHead({json.dumps(config)[1:-1]}, trainable_parameters={self.num_trainable_parameters()})"


def _follow_umask(path: str) -> None:
    """Give ``path`` the mode a newly created file gets from the umask (as every other saved file has)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _model_root(output_path: str) -> str | None:
    """The folder holding the model's config: the module's parent, or grandparent inside a Router."""
    path = os.path.abspath(output_path)
    for _ in range(3):
        if os.path.isfile(os.path.join(path, ROOT_MARKER)):
            return path
        path = os.path.dirname(path)
    return None


def _dimension_below(model: Any, head: ProjectionHead) -> int | None:
    """Width of the last top-level module before the one that holds ``head`` (itself or a Router)."""
    below = None
    for module in model._modules.values():
        routes = getattr(module, "sub_modules", None)
        holds_head = module is head or (
            isinstance(routes, (dict, nn.ModuleDict)) and any(head in list(chain) for chain in routes.values())
        )
        if holds_head:
            return below
        dimension = getattr(module, "get_embedding_dimension", None)
        if callable(dimension):
            below = dimension() or below
    return None


# The saved ``modules.json`` / ``router_config.json`` type becomes ``frozen_head/projection_head.ProjectionHead``,
# wherever this class came from. The remote-code loader resolves it to ``frozen_head/projection_head.py`` in the
# model's folder or Hub repo. When that file is missing, sentence-transformers falls back to a plain import of the
# name, and a module name holding "/" matches no file in a folder on ``sys.path``: the load fails instead of
# importing some other ``projection_head.py`` (as a bare ``projection_head.ProjectionHead`` would, e.g. one in the
# current folder). Only a zip archive on ``sys.path`` holding ``frozen_head/projection_head.py`` would still answer.
ProjectionHead.__module__ = MODULE_REF
