"""`python -m DeFacerLib` runs the `defacer` command."""
import sys

from DeFacerLib.cli.main import main

sys.exit(main())
