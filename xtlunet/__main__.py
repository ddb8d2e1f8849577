"""python -m xtlunet."""
import sys

from xtlunet.cli import main

sys.exit(main())
