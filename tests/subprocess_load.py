"""Load a saved model in a fresh Python process, with or without this package importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
import numpy as np
spec = json.loads(sys.argv[1])
if spec["hide_package"]:
    # Forget the editable install of this repo: its path hook, its meta-path finder and the repo root.
    import os
    sys.path = [p for p in sys.path if "__editable__" not in p and os.path.abspath(p or ".") != spec["repo_root"]]
    sys.path_hooks = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
    sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path_importer_cache.clear()
    for name in ("modeling", "model_card"):
        try:
            __import__(name)
        except ImportError:
            continue
        raise SystemExit(f"package {name!r} is importable but must not be")
from sentence_transformers import SentenceTransformer
kwargs = {"trust_remote_code": True} if spec["trust"] else {}
try:
    model = SentenceTransformer(spec["model"], **kwargs)
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
    raise SystemExit(0)
out = {
    "query": model.encode_query(spec["texts"]).tolist(),
    "document": model.encode_document(spec["texts"]).tolist(),
    "dimension": model.get_embedding_dimension(),
    "head_module": next((type(m).forward.__module__ for m in model.modules() if type(m).__name__ == "ProjectionHead"), None),
}
if spec.get("resave"):
    model.save_pretrained(spec["resave"])
print(json.dumps(out))
"""


def load_in_subprocess(
    model: str,
    texts: list[str],
    trust: bool = True,
    hide_package: bool = True,
    resave: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> dict:
    """Embeddings from ``SentenceTransformer(model)`` in a new interpreter.

    With ``hide_package`` the child runs from a neutral folder with a clean ``sys.path`` (no repo root, no
    PYTHONPATH) and asserts that ``modeling`` cannot be imported: the machine-without-this-package case.
    """
    spec = {
        "model": model,
        "texts": texts,
        "trust": trust,
        "hide_package": hide_package,
        "resave": resave,
        "repo_root": str(REPO_ROOT),
    }
    child_env = {**os.environ, **(env or {}), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    child_env.update(env or {})
    if hide_package:
        child_env.pop("PYTHONPATH", None)
        args = [sys.executable, "-I", "-c", SCRIPT, json.dumps(spec)]  # -I: no cwd, no user site, no PYTHON* vars
    else:
        child_env["PYTHONPATH"] = str(REPO_ROOT)
        args = [sys.executable, "-c", SCRIPT, json.dumps(spec)]
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=child_env,
        cwd=cwd or (os.path.dirname(model) if os.path.isdir(model) else None),
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
