"""Run the command line as ``python -m stitchc``."""

from stitchc.cli import main

if __name__ == "__main__":
    main()
