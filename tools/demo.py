#!/usr/bin/env python3
"""`python tools/demo.py` runs `ssd-demo` (the code is in ssd/cli/demo.py)."""

import sys

from ssd.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
