#!/usr/bin/env python3
"""Plant each mistake of mutants.py, one at a time, in a throwaway copy of the committed tree,
and record which of quorate's tools catches it and how fast.

    python3 tests/mutations/run.py [--only NAME,NAME] [--tools unit,model,cluster,sim]
                                   [--sim-seeds 300] [--sim-first 60000] [--keep-going]

Tools (each run on every mutant, in this order, unless --keep-going is off and one caught it):
  unit     the library's unit tests (Engine handlers, replication, ...), debug build
  model    the Engine model checker's bounded CI checks, release build
  model-targeted  the model checker's targeted checks (deeper, one kind of path each; not in CI)
  cluster  the black-box cluster tests, debug build
  sim      the simulator: --sim-seeds fresh seeds from --sim-first, release build

It prints a Markdown table: for each mutant, per tool, "caught" (with the first failing test,
or the first failing seed and how many seeds it took) or "missed", and the time. Nothing in the
repository is changed; the copy and its target directory live under $TMPDIR.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutants import MUTANTS  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
WORK = os.path.join(tempfile.gettempdir(), "quorate-mutants")
TREE = os.path.join(WORK, "tree")
TARGET = os.path.join(WORK, "target")
TOOL_TIMEOUT = 30 * 60


def sh(cmd, env=None, timeout=TOOL_TIMEOUT):
    started = time.time()
    try:
        p = subprocess.run(cmd, cwd=TREE, env=env, shell=True, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr, time.time() - started
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", out, time.time() - started


def fresh_tree():
    shutil.rmtree(TREE, ignore_errors=True)
    os.makedirs(TREE)
    archive = subprocess.run(["git", "-C", REPO, "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", TREE], input=archive, check=True)


def apply(m):
    """Make the mutant's change (and its `also` changes, for a mistake that takes more than one
    edit); None, or why it does not apply."""
    for edit in [m] + m.get("also", []):
        path = os.path.join(TREE, edit["file"])
        text = open(path).read()
        count = text.count(edit["old"])
        if count != 1:
            return f"does not apply ({count} matches in {edit['file']})"
        open(path, "w").write(text.replace(edit["old"], edit["new"]))
    return None


def failing_tests(out):
    return re.findall(r"^test (\S+) \.\.\. FAILED", out, re.M)


def run_tool(tool, args):
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET, CARGO_TERM_COLOR="never")
    if tool == "unit":
        code, out, t = sh("cargo test -p quorate --features testing --lib -- --skip engine::model", env)
    elif tool == "model":
        code, out, t = sh("cargo test -p quorate --release --features testing --lib engine::model::", env)
    elif tool == "model-targeted":
        code, out, t = sh(
            "cargo test -p quorate --release --features testing --lib engine::model::targeted -- --ignored", env
        )
    elif tool == "cluster":
        code, out, t = sh("cargo test -p quorate --features testing --test cluster", env)
    elif tool == "sim":
        env.update(SIM_SEEDS=str(args.sim_seeds), SIM_FIRST_SEED=str(args.sim_first))
        code, out, t = sh("cargo test -p quorate --release --features testing --test sim soak -- --ignored --nocapture", env)
        seeds = [int(s) for s in re.findall(r"^seed (\d+):", out, re.M)]
        if seeds:
            first = min(seeds)
            return f"caught: seed {first} ({first - args.sim_first + 1} seeds; {len(seeds)} of {args.sim_seeds} failed)", t
    else:
        raise SystemExit(f"unknown tool {tool}")
    if code == "timeout":
        return "timed out (counts as caught only if a test hangs on purpose)", t
    if code == 0:
        return "missed", t
    if re.search(r"^error(\[E\d+\])?:", out, re.M) and "could not compile" in out:
        return "did not compile", t
    tests = failing_tests(out)
    if tests:
        more = f" (+{len(tests) - 1} more)" if len(tests) > 1 else ""
        return f"caught: {tests[0]}{more}", t
    return "caught (failed, no test name)", t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--tools", default="unit,model,cluster,sim")
    ap.add_argument("--sim-seeds", type=int, default=300)
    ap.add_argument("--sim-first", type=int, default=60000)
    ap.add_argument("--keep-going", action="store_true", help="run every tool even after one caught the mutant")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    tools = args.tools.split(",")
    rows = []
    for m in MUTANTS:
        if only and m["name"] not in only:
            continue
        fresh_tree()
        problem = apply(m)
        results = {}
        if problem:
            results = {t: (problem, 0.0) for t in tools}
        else:
            for tool in tools:
                verdict, secs = run_tool(tool, args)
                results[tool] = (verdict, secs)
                print(f"{m['name']:40} {tool:8} {verdict} ({secs:.0f} s)", flush=True)
                if verdict.startswith("caught") and not args.keep_going:
                    break
        rows.append((m, results))
    print()
    print("| mistake | " + " | ".join(tools) + " |")
    print("|---|" + "---|" * len(tools))
    for m, results in rows:
        cells = []
        for t in tools:
            if t in results:
                verdict, secs = results[t]
                cells.append(f"{verdict} ({secs:.0f} s)")
            else:
                cells.append("—")
        print(f"| {m['name']}: {m['what']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
