"""Evaluate a trained model against the bare encoder, BM25 and their hybrid: ``python evaluate.py --help``.

A thin script over ``modeling.cli.evaluate`` (installed as the console script ``frozen-head-evaluate``).
"""

import sys

from modeling.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
