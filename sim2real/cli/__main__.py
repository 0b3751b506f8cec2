"""`python -m sim2real.cli` runs the command line."""

from sim2real.cli import main

main()
