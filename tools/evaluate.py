#!/usr/bin/env python3
"""`python tools/evaluate.py` runs `ssd-evaluate` (the code is in ssd/cli/evaluate.py)."""

import sys

from ssd.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
