"""`python -m hfpref.cli`, the same as `hfpref`."""

import sys

from hfpref.cli.main import main


sys.exit(main())
