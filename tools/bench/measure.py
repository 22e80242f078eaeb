#!/usr/bin/env python3
"""Runs a command and prints its wall time, peak memory (max RSS of the
child) and the last line it wrote to stderr as JSON on the last line:
{"seconds": s, "peak_mib": m, "rc": rc, "stderr": "..."}."""
import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
secs = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
last = next((line for line in reversed(r.stderr.splitlines()) if line.strip()), "")
print(json.dumps({"seconds": secs, "peak_mib": peak, "rc": r.returncode, "stderr": last[:200]}))
