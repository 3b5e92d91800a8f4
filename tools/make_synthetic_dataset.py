#!/usr/bin/env python3
"""`python tools/make_synthetic_dataset.py` runs `ssd-make-dataset` (the code is in ssd/cli/make_synthetic_dataset.py)."""

import sys

from ssd.cli.make_synthetic_dataset import main

if __name__ == "__main__":
    sys.exit(main())
