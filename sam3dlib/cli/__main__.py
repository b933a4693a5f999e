import sys

from sam3dlib.cli import main

sys.exit(main())
