import sys

from trustmilter.cli import main

sys.exit(main())
