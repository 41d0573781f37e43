#!/usr/bin/env python3
"""guess_rate.py - how fast one client address can guess POP3 passwords.

Starts popserver (with its defaults unless told otherwise) on a free port of
127.0.0.1 with a throwaway spool and user.txt, then opens --connections
parallel connections from 127.0.0.1 that send USER alice / PASS <wrong>
again and again for --seconds (a connection the server closes after its
third failure is opened again), and counts the wrong-password answers
received: the guesses the server let through. Every wait is bounded by the
run's end; only the server it started is stopped, by PID.

    python3 tests/guess_rate.py                        # ./popserver, 20 connections, 60 s
    python3 tests/guess_rate.py --bin build/asan/popserver --seconds 20
    python3 tests/guess_rate.py -- -w 500              # options for popserver after --

Not part of `make test` (a minute long); the target it checks is "under 100
guesses a minute from one address with 20 parallel connections".
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guesser(port, end, counts, lock):
    """Guess until end; counts: guesses answered, refusals, connections."""
    while time.time() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=max(0.1, end - time.time()))
        except OSError:
            time.sleep(0.1)
            continue
        f = s.makefile("rb")
        try:
            greeting = f.readline()
            with lock:
                counts["connections"] += 1
            if not greeting.startswith(b"+OK"):
                with lock:
                    counts["refused"] += 1
                time.sleep(0.1)
                continue
            while time.time() < end:
                s.settimeout(max(0.1, end - time.time()))
                s.sendall(b"USER alice\r\nPASS wrong-guess\r\n")
                if not f.readline().startswith(b"+OK"):
                    break
                answer = f.readline()
                if not answer.startswith(b"-ERR [AUTH]"):
                    break
                if time.time() < end:
                    with lock:
                        counts["guesses"] += 1
                        counts["times"].append(time.time())
        except OSError:
            pass                    # the run's end (timeout) or a closed session
        finally:
            f.close()
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "popserver"))
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("server_args", nargs="*", help="options for popserver (after --)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="guessrate-")
    os.mkdir(os.path.join(work, "users"))
    with open(os.path.join(work, "user.txt"), "w") as f:
        f.write("alice alicepw\n")
    port = free_port()
    log = open(os.path.join(work, "popserver.log"), "wb")
    server = subprocess.Popen([args.bin, "-d", os.path.join(work, "users"), "-u",
                               os.path.join(work, "user.txt"), "-l", "127.0.0.1"]
                              + args.server_args + [str(port)], stdout=log, stderr=log)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(log.name, "rb") as f:
                if b"listening" in f.read():
                    break
            if server.poll() is not None:
                sys.exit("popserver exited at start")
            time.sleep(0.05)
        counts, lock = {"guesses": 0, "refused": 0, "connections": 0, "times": []}, threading.Lock()
        start = time.time()
        end = start + args.seconds
        threads = [threading.Thread(target=guesser, args=(port, end, counts, lock), daemon=True)
                   for _ in range(args.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 20)
        times = sorted(t - start for t in counts["times"])
        per_minute = counts["guesses"] * 60 / args.seconds
        print("popserver %s %s" % (args.bin, " ".join(args.server_args)))
        print("%d connections from 127.0.0.1 for %.0f s: %d wrong passwords answered "
              "(%.0f a minute), %d connections, %d refused"
              % (args.connections, args.seconds, counts["guesses"], per_minute,
                 counts["connections"], counts["refused"]))
        for mark in (5, 10, 30, 60):
            if mark <= args.seconds:
                print("  answered by %3d s: %d" % (mark, sum(1 for t in times if t < mark)))
        print("target: under 100 a minute: %s" % ("met" if per_minute < 100 else "MISSED"))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
