"""`python -m mlgate` is the `mlgate` command."""

import sys

from mlgate.cli import main

sys.exit(main())
