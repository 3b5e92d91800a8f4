#!/usr/bin/env python3
"""`python tools/evaluate_tracking.py` runs `ssd-evaluate-tracking` (the code is in ssd/cli/evaluate_tracking.py)."""

import sys

from ssd.cli.evaluate_tracking import main

if __name__ == "__main__":
    sys.exit(main())
