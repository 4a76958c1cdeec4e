"""Train a projection head on a frozen sentence-transformers encoder: ``python train.py --help``.

A thin script over ``modeling.cli.train`` (installed as the console script ``frozen-head-train``).
"""

import sys

from modeling.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
