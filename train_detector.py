#!/usr/bin/env python3
"""`python train_detector.py` runs `ssd-train` (the code is in ssd/cli/train.py)."""

import sys

from ssd.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
