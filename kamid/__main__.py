import sys

from kamid.daemon import main

sys.exit(main())
