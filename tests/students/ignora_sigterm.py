"""A correct server that ignores SIGTERM: python ignora_sigterm.py PORT PIDFILE [hijo].

With 'hijo' it also starts a child that ignores SIGTERM (as a worker would), so
only killing the whole process group ends both. Their pids go to PIDFILE, one a line.
"""

import os
import signal
import subprocess
import sys

from comun import answer_correctly, listen, serve_forever

signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = [os.getpid()]
if sys.argv[3:] == ["hijo"]:
    child = subprocess.Popen([
        sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    ])
    pids.append(child.pid)
with open(sys.argv[2], "w") as pidfile:
    pidfile.write("".join(f"{pid}\n" for pid in pids))
listener = listen()
print("SIGTERM no me para", flush=True)
serve_forever(listener, answer_correctly)
