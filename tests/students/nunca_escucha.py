"""A server that never listens (it sleeps, then gives up): python nunca_escucha.py PORT."""

import time

print("pensando en otra cosa", flush=True)
time.sleep(60)
