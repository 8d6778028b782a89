"""`python -m hfpref.cli`, the same as `hfpref`."""

import sys

from .main import main


sys.exit(main())
