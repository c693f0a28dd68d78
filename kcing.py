#!/usr/bin/env python3
"""Run the kcing command line (same as the installed `kcing` command)."""
import sys

from kcing.launch import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
