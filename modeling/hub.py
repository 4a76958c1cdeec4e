"""Push a saved model folder to the Hugging Face Hub: exactly the model's files, nothing else.

Why not ``SentenceTransformer.push_to_hub(local_model_path=...)``: it uploads the folder verbatim, so a
training output folder would ship its checkpoints, caches and logs. Here the folder is checked first
(it must load anywhere: with ``trust_remote_code=True``, or with nothing for the stock format of
``modeling.model.stock``; no module path may lead outside it), the model's files are picked by an allow-list
and staged in a temporary folder (the card gets the repo id there), and only then does
``huggingface_hub`` create the repo and upload. The local folder is never modified.

What is uploaded: the root files of a sentence-transformers model (``modules.json``, configs,
tokenizer files, ``*.safetensors``, ``README.md``, ``LICENSE``), the code files the module types name
(``frozen_head/projection_head.py``; ``projection_head.py`` in models of earlier versions), the module
subfolders named in ``modules.json`` (configs and weights only), and the card's plots
(``evaluation/*.png``, ``*.svg``). Not uploaded: checkpoints, caches, logs, and the per-query JSON dumps
under ``evaluation/`` (the card and its ``model-index`` carry the numbers; the dumps are large and can
hold dataset text). Files already in the repo that are not part of the model are deleted, so the repo
mirrors the model (``.gitattributes`` is kept).

The token comes from the ``token`` argument, ``HF_TOKEN`` or ``hf auth login``; it is never printed,
logged or written anywhere.

CLI: ``python -m modeling.hub push MODEL_DIR ORG/NAME [--private]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from modeling.model.code_files import code_files

logger = logging.getLogger(__name__)

ROOT_FILES = (
    "modules.json",
    "hybrid.json",  # the fusion weight with BM25 that training chose on dev (read by evaluate.py)
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "config.json",
    "generation_config.json",
    "router_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",
    "*.safetensors",
    "model.safetensors.index.json",
    "README.md",
    "LICENSE*",
)
MODULE_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")
PLOT_FILES = ("evaluation/*.png", "evaluation/*.svg")
# The library's stand-in for the repo id in a card written before the repo id was known.
MODEL_ID_PLACEHOLDER = "sentence_transformers_model_id"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class PushError(RuntimeError):
    """The push failed; the message says that the local folder is intact and how to retry."""


def push_model(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the model in ``folder`` to the Hub repo ``repo_id`` (created if needed); returns the commit URL.

    Everything that can be checked locally (the folder is a complete model, the repo id, a token,
    offline mode) is checked before the first request. Raises ``ValueError`` for those and
    ``PushError`` when the Hub part fails.
    """
    from huggingface_hub import HfApi, ModelCard

    folder = Path(folder)
    files = model_files(folder)
    token = preflight(repo_id, token=token)
    retry = retry_command(folder, repo_id, private)

    with tempfile.TemporaryDirectory(prefix="push-") as staging:
        stage(folder, files, Path(staging), repo_id)
        _refuse_secret(Path(staging), token)
        ModelCard.load(Path(staging) / "README.md")  # the card's YAML must parse before anything is sent
        logger.info(
            "Pushing %d files from %s to %s (%s).", len(files), folder, repo_id, "private" if private else "public"
        )
        try:
            api = HfApi(token=token)
            api.create_repo(repo_id, private=private or None, exist_ok=True)  # None: the account's default
            if private and not api.model_info(repo_id).private:
                raise PushError(
                    f"{repo_id} already exists and is public; it was asked to be private, so nothing was uploaded."
                )
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                commit_message=commit_message or f"Upload {folder.name}",
                delete_patterns="*",
            )
        except Exception as error:
            message = _scrub(f"{type(error).__name__}: {error}", token)
            status = getattr(getattr(error, "response", None), "status_code", None)
            if status in (401, 403):
                message += (
                    f"\nCheck that your token (HF_TOKEN or `hf auth login`) may write to {repo_id.split('/')[0]}."
                )
            raise PushError(
                f"Pushing {folder} to {repo_id} failed: {message}\n"
                f"The local model in {folder} is intact: nothing in it was changed.\n"
                f"To retry: {retry}"
            ) from (None if token in str(error) else error)
    logger.info("Pushed %s: %s", repo_id, commit.commit_url)
    return commit.commit_url


def preflight(repo_id: str, *, token: str | None = None) -> str:
    """Check what a push needs besides the model (repo id, Hub access, a token) without any request; returns the token.

    train.py calls it before training, so ``--push-to-hub`` fails in a second rather than after the run.
    """
    from huggingface_hub import constants, get_token

    if not _REPO_ID.fullmatch(repo_id):
        raise ValueError(
            f"Repo id must look like 'org/name' (your user or organisation, then the model name), got {repo_id!r}."
        )
    if constants.is_offline_mode():
        raise ValueError("HF_HUB_OFFLINE is set, so nothing can be pushed: run again with HF_HUB_OFFLINE=0.")
    token = token or get_token()
    if not token:
        raise ValueError("No Hugging Face token found: set HF_TOKEN, or run `hf auth login`, then push again.")
    return token


def model_files(folder: Path) -> list[str]:
    """The model's files in ``folder`` (relative POSIX paths); ValueError listing what a complete model lacks."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: pass the folder a model was saved to (train.py's output folder).")
    problems = []
    module_dirs, sources = [], []
    if (folder / "modules.json").is_file():
        try:
            modules = json.loads((folder / "modules.json").read_text())
            module_dirs = [entry["path"] for entry in modules if entry.get("path")]
            sources = code_files(folder)
        except (ValueError, KeyError, TypeError) as error:
            problems.append(f"modules.json is not a sentence-transformers module list ({error})")
        _refuse_paths_outside(folder, module_dirs)
        problems += [
            f"module folder {path}/ named in modules.json is missing"
            for path in module_dirs
            if not (folder / path).is_dir()
        ]
    types = "".join(
        path.read_text() for path in folder.rglob("*.json") if path.name in ("modules.json", "router_config.json")
    )
    # A stock-format model (only sentence_transformers.* modules, see modeling.model.stock) names no code file.
    required = ("modules.json", "config_sentence_transformers.json", "README.md")
    problems = (
        [f"{name} is missing at the top of the folder" for name in required if not (folder / name).is_file()]
        + [
            f"{name} (the code of a module named in the model's config) is missing"
            for name in sources
            if not (folder / name).is_file()
        ]
        + problems
    )
    if "transformers_modules." in types:
        problems.append(
            "a module type points into transformers_modules (a re-saved remote-code model); save it with modeling.save_model"
        )
    if not list(folder.glob("*.safetensors")):
        problems.append("no *.safetensors encoder weights at the top of the folder")
    if not any(
        path.name.endswith(".safetensors") for directory in module_dirs for path in (folder / directory).rglob("*")
    ):
        problems.append("no *.safetensors head weights in the module folders")
    if problems:
        raise ValueError(
            f"{folder} is not a complete model, so nothing was pushed:\n- "
            + "\n- ".join(problems)
            + "\nSave the model with modeling.save_model (train.py does) and push again."
        )
    files = {path.name for path in folder.iterdir() if path.is_file() and _matches(path.name, ROOT_FILES)}
    files.update(sources)
    for directory in module_dirs:
        for path in (folder / directory).rglob("*"):
            if path.is_file() and _matches(path.name, MODULE_FILES):
                files.add(path.relative_to(folder).as_posix())
    files.update(
        p.relative_to(folder).as_posix()
        for p in folder.glob("evaluation/*")
        if _matches(p.relative_to(folder).as_posix(), PLOT_FILES)
    )
    _refuse_paths_outside(folder, sorted(files))
    return sorted(files)


def _refuse_paths_outside(folder: Path, paths: list[str]) -> None:
    """ValueError if a path (from modules.json, or a file to upload) leaves ``folder``: ``..``, absolute, or a symlink."""
    root = folder.resolve()
    for path in paths:
        parts = Path(path).parts
        escapes = Path(path).is_absolute() or ".." in parts
        if not escapes:
            target = (folder / path).resolve()
            escapes = target != root and root not in target.parents
        if escapes:
            raise ValueError(
                f"{folder} is not a model folder that can be pushed: {path!r} (named in modules.json or found in a "
                "module folder) leads outside the folder. Only files inside the model folder are uploaded; "
                "fix modules.json or replace the link with the file itself."
            )


def stage(folder: Path, files: list[str], staging: Path, repo_id: str) -> None:
    """Link (or copy) ``files`` into ``staging``; the README gets the repo id in place of the placeholder."""
    for name in files:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "README.md":
            target.write_text(
                (folder / name).read_text(encoding="utf8").replace(MODEL_ID_PLACEHOLDER, repo_id), encoding="utf8"
            )
            continue
        try:
            os.link(folder / name, target)
        except OSError:
            shutil.copyfile(folder / name, target)


def retry_command(folder: Path, repo_id: str, private: bool) -> str:
    return f"python -m modeling.hub push {shlex.quote(str(folder))} {repo_id}" + (" --private" if private else "")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _refuse_secret(staging: Path, token: str) -> None:
    """Stop if the token made its way into a file about to be uploaded (weights excluded: binary tensors)."""
    secret = token.encode()
    for path in staging.rglob("*"):
        if path.is_file() and not path.name.endswith(".safetensors") and secret in path.read_bytes():
            raise ValueError(
                f"{path.relative_to(staging)} contains your Hugging Face token; nothing was pushed. Remove it first."
            )


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "<token>") if token else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling.hub",
        description="Push a saved model folder to the Hugging Face Hub (only the model's files).",
        epilog="The token is read from HF_TOKEN or from `hf auth login`; there is no --token option, "
        "so it never lands in your shell history.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser(
        "push",
        help="push MODEL_DIR to the Hub repo ORG/NAME",
        description="Upload the model files of MODEL_DIR (no checkpoints, caches or logs) to ORG/NAME. "
        + parser.epilog,
    )
    push.add_argument("model_dir", metavar="MODEL_DIR", help="folder written by train.py / modeling.save_model")
    push.add_argument("repo_id", metavar="ORG/NAME", help="Hub repo id; created if it does not exist")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--message", default=None, help="commit message")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per HTTP request is noise here
    try:
        url = push_model(args.model_dir, args.repo_id, private=args.private, commit_message=args.message)
    except (ValueError, PushError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
