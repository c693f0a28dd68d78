#!/usr/bin/env python3
"""Run the kcing command line (same as the installed `kcing` command)."""
import sys

from kcing.cli import main

if __name__ == "__main__":
    sys.exit(main())
