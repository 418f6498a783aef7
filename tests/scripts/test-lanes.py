#!/usr/bin/env python3
"""Runs the workspace's test binaries in two lanes at once, as `cargo test` would one by one.

Most of an end-to-end test's time is waiting (for Ray processes to start, for the API server,
for a controller), not computing, so two lanes halve the wall time on two cores. The lane
`ray` runs the tests whose clusters run real Ray processes (heavy in memory and start-up
CPU), one binary at a time; the lane `rest` runs everything else, then the doc tests.

Usage: test-lanes.py RAY_TEST [RAY_TEST ...]   (names of tests/e2e/tests/*.rs for lane ray)
Builds with `cargo test --workspace --locked --no-run` first. Each binary's output is printed
whole when it ends; the summary lists every binary with its time. Exits 1 if any failed.
"""

import json
import os
import subprocess
import sys
import threading
import time

E2E_PACKAGE = "wasmray-e2e"


def build():
    """Builds every test binary; returns (name, package, kind, executable, package dir)."""
    command = [
        "cargo", "test", "--workspace", "--locked", "--no-run",
        "--message-format=json-render-diagnostics",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    binaries = []
    for line in process.stdout:
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        target = message["target"]
        if not message["profile"]["test"]:
            continue
        binaries.append((
            target["name"],
            package_name(message),
            target["kind"][0],
            message["executable"],
            os.path.dirname(message["manifest_path"]),
        ))
    if process.wait() != 0:
        sys.exit("building the tests failed")
    return binaries


def package_name(message):
    """The package of an artifact message, from its manifest's [package] name."""
    with open(message["manifest_path"]) as manifest:
        in_package = False
        for line in manifest:
            line = line.strip()
            if line.startswith("["):
                in_package = line == "[package]"
            elif in_package and line.startswith("name"):
                return line.split("=", 1)[1].strip().strip('"')
    return "?"


class Lane(threading.Thread):
    def __init__(self, name, jobs, lock, results):
        super().__init__(name=name)
        self.jobs = jobs
        self.lock = lock
        self.results = results

    def run(self):
        for label, command, directory in self.jobs:
            started = time.monotonic()
            done = subprocess.run(
                command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True,
            )
            elapsed = time.monotonic() - started
            with self.lock:
                print(f"\n==> [{self.name}] {label}: exit {done.returncode} in {elapsed:.0f} s",
                      flush=True)
                print(done.stdout, end="", flush=True)
                self.results.append((self.name, label, done.returncode, elapsed))


def main():
    ray_tests = set(sys.argv[1:])
    binaries = build()
    lanes = {"ray": [], "rest": []}
    for name, package, kind, executable, directory in binaries:
        label = f"{package} {kind} {name}"
        lane = "ray" if package == E2E_PACKAGE and kind == "test" and name in ray_tests else "rest"
        lanes[lane].append((label, [executable], directory))
    missing = ray_tests - {name for name, package, kind, *_ in binaries
                           if package == E2E_PACKAGE and kind == "test"}
    if missing:
        sys.exit(f"no such end-to-end test: {', '.join(sorted(missing))}")
    lanes["rest"].append(("doc tests", ["cargo", "test", "--workspace", "--locked", "--doc"],
                          os.getcwd()))
    lock = threading.Lock()
    results = []
    threads = [Lane(name, jobs, lock, results) for name, jobs in lanes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("\n==> summary")
    for lane, label, code, elapsed in sorted(results):
        print(f"  {lane:4} {'ok    ' if code == 0 else 'FAILED'} {elapsed:6.0f} s  {label}")
    failed = [label for _, label, code, _ in results if code != 0]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
