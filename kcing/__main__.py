import sys

from kcing.cli import main

sys.exit(main())
