import sys

from kamictl.cli import main

sys.exit(main())
