"""Preview a model card roughly as the Hub shows it: HTML from the README, optionally a Chromium screenshot.

For looking at the card before pushing it, not for shipping: ``python -m model_card.render_preview
MODEL_DIR --html /tmp/card.html [--png /tmp/card.png]``. Needs ``markdown`` (the test extra) and,
for ``--png``, a ``chromium`` binary.
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
from pathlib import Path

from huggingface_hub import ModelCard

STYLE = """
body { font-family: "DejaVu Sans", sans-serif; margin: 0; color: #1f2937; }
.page { display: flex; gap: 32px; max-width: 1160px; margin: 24px auto; }
main { flex: 1; min-width: 0; } aside { width: 260px; font-size: 13px; }
aside div { border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 12px; margin-bottom: 12px; }
.tag { display: inline-block; background: #f3f4f6; border-radius: 6px; padding: 1px 6px; margin: 2px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; } th, td { border: 1px solid #e5e7eb; padding: 3px 8px; }
pre { background: #f9fafb; padding: 10px; overflow-x: auto; font-size: 12px; } code { font-size: 12px; }
img { max-width: 100%; } h1 { font-size: 26px; } h2 { border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }
"""


def render(model_dir: Path) -> str:
    """The README as a page: body rendered from markdown, front matter as a sidebar like the Hub's."""
    import markdown

    card = ModelCard.load(model_dir / "README.md")
    body = markdown.markdown(_unindent_tables(card.text), extensions=["tables", "fenced_code", "md_in_html"])
    meta = card.data.to_dict()
    facts = [
        (key, meta[key])
        for key in ("library_name", "pipeline_tag", "base_model", "license", "language")
        if meta.get(key)
    ]
    sidebar = "".join(f"<div><b>{html.escape(key)}</b><br>{html.escape(str(value))}</div>" for key, value in facts)
    tags = "".join(f'<span class="tag">{html.escape(tag)}</span>' for tag in meta.get("tags") or [])
    base = (model_dir.resolve().as_uri()) + "/"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><base href="{base}"><style>{STYLE}</style></head><body>'
        f'<div class="page"><main>{body}</main><aside><div><b>tags</b><br>{tags}</div>{sidebar}</aside></div></body></html>'
    )


def _unindent_tables(text: str) -> str:
    """python-markdown ignores tables indented under a list item (the Hub renders them): lift them out."""
    lines, previous_table = [], False
    for line in text.splitlines():
        table = line.startswith("  |")
        if table and not previous_table:
            lines.append("")
        lines.append(line[2:] if table else line)
        if previous_table and not table and line.strip():
            lines.insert(len(lines) - 1, "")
        previous_table = table
    return "\n".join(lines)


def screenshot(page: Path, png: Path, height: int = 3000) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: install it (apt-get install chromium) or drop --png.")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
    ]
    flags += [
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--window-size=1200,{height}",
        f"--screenshot={png}",
    ]
    subprocess.run([browser, *flags, page.resolve().as_uri()], check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--html", type=Path, required=True, help="where to write the page (outside the model folder)")
    parser.add_argument("--png", type=Path, help="also take a headless Chromium screenshot here")
    parser.add_argument("--height", type=int, default=3000, help="screenshot height in pixels")
    args = parser.parse_args(argv)
    args.html.write_text(render(args.model_dir), encoding="utf8")
    if args.png:
        screenshot(args.html, args.png, args.height)


if __name__ == "__main__":
    main()
