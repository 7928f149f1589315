import sys

from bignas.cli import main

sys.exit(main())
