#!/usr/bin/env python3
"""Runs a command and prints its wall time and peak memory (max RSS of the
child) as JSON on the last line: {"seconds": s, "peak_mib": m, "rc": rc}."""
import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
secs = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": secs, "peak_mib": peak, "rc": rc}))
