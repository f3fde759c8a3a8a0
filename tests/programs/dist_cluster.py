"""Runs a MultiWorkerMirroredStrategy job: --workers processes of dist_child.py on 127.0.0.1.

Each worker gets TF_CONFIG with the whole cluster (free loopback ports, found by binding to port 0) and its
own task index; the remaining arguments go to every worker. Prints one JSON line:
{"workers": [worker 0's JSON line, worker 1's, ...]}; exits non-zero (with every worker's output on
stderr) if any worker failed.

This is also the smallest example of launching a multi-worker job by hand (docs/distributed.md).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

CHILD = Path(__file__).resolve().parent / "dist_child.py"


def free_ports(n: int) -> list[int]:
    """n distinct free ports on the loopback interface (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def main(argv: list[str]) -> int:
    workers = 2
    if argv[:1] == ["--workers"]:
        workers, argv = int(argv[1]), argv[2:]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    procs = []
    for index in range(workers):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        cmd = [sys.executable, str(CHILD), "--strategy", "multiworker", "--devices", "1", *argv]
        procs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)))
    results, failed = [], False
    for cmd, proc in procs:
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            failed = True
            sys.stderr.write(f"worker {' '.join(cmd)} exited {proc.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{err}\n")
        lines = out.strip().splitlines()
        results.append(json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None)
    print(json.dumps({"workers": results}))
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
