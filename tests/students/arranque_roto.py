"""A server that exits before it listens (exit status 3): python arranque_roto.py PORT."""

import sys

print("no encuentro config.ini", file=sys.stderr)
sys.exit(3)
