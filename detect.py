#!/usr/bin/env python3
"""`python detect.py` runs `ssd-detect` (the code is in ssd/cli/detect.py)."""

import sys

from ssd.cli.detect import main

if __name__ == "__main__":
    sys.exit(main())
