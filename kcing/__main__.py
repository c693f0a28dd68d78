import sys

from kcing.launch import cli_main

sys.exit(cli_main())
