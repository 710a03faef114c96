"""`python -m cli ...` is `dcgan ...`."""

import sys

from cli.main import main

sys.exit(main())
