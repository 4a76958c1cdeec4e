"""The code files a saved model's module types name, so a missing one is reported by its name.

sentence-transformers resolves a type outside ``sentence_transformers.`` written as ``path/file.Class`` (one dot) to
``path/file.py`` in the model's folder or Hub repo (this project's head: ``frozen_head/projection_head.py``; models
of earlier versions: ``projection_head.py``). A push must carry those files, and a missing one should be named
before a load, where the library only says ``No module named ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

LIBRARY_PREFIX = "sentence_transformers."


def module_types(folder: str | Path) -> list[str]:
    """Every module type a saved model names (``modules.json`` and any ``router_config.json``)."""
    folder = Path(folder)
    types = [str(entry["type"]) for entry in json.loads((folder / "modules.json").read_text())]
    for config in sorted(folder.rglob("router_config.json")):
        types += [str(kind) for kind in json.loads(config.read_text()).get("types", {}).values()]
    return types


def code_file(module_type: str) -> str | None:
    """The file, relative to the model's root, that the remote-code loader reads for ``module_type`` (or None)."""
    module, _, name = module_type.rpartition(".")
    if module_type.startswith(LIBRARY_PREFIX) or not module or not name or "." in module or "--" in module:
        return None  # the library's own, an installed package (more dots), or code in another repo
    return f"{module}.py"


def code_files(folder: str | Path) -> list[str]:
    """The code files (relative POSIX paths) the model in ``folder`` needs, in the order its types name them."""
    files = [code_file(kind) for kind in module_types(folder)]
    return list(dict.fromkeys(name for name in files if name is not None))


def missing_code_files(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return [name for name in code_files(folder) if not (folder / name).is_file()]
