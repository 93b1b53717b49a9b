"""`python -m vmkit`: the vmkit command (vmkit/cli)."""
import sys

from vmkit.cli import main

sys.exit(main())
