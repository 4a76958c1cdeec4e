"""Command-line entry points: ``train`` and ``evaluate`` (also the console scripts ``frozen-head-train`` and
``frozen-head-evaluate``, and the thin ``train.py`` / ``evaluate.py`` scripts at the repository root)."""
