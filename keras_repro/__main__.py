"""`python -m keras_repro` runs the `keras-repro` command line.

Example:
    $ python -m keras_repro diff runs/a runs/b
"""

import sys

from keras_repro.cli import main

if __name__ == "__main__":
    sys.exit(main())
