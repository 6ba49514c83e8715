import sys

from cosrec.cli import main

sys.exit(main())
