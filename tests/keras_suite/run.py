"""Runs Keras's own fit tests (copied from the installed wheel) on plain Keras and routed through
keras_repro.fit, and compares the two pass lists.

    python tests/keras_suite/run.py            # both runs, prints the difference, exit 1 if any
    python tests/keras_suite/run.py --only routed -k trainer_test

Keras's files are copied at run time into a temp dir (never committed). Tests that need packages not
installed here (jax, torch, grain, orbax, tensorboard) are left out or skip themselves in both runs.

Measured (2026-11-28, TF 2.21 / Keras 3.15, 2 cores): 379 tests from 18 files; plain 359 passed, 20
skipped (154 s); routed through autolog 359 passed, 20 skipped (154 s, 139 run records); no difference.
Too slow for `make test`, which runs a routed sample (tests/test_keras_suite.py); `make keras-tests` runs
it all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = Path(os.environ.get("KERAS_SUITE_REPO") or HERE.parent.parent)  # the keras_repro to route through
FILES = ["callbacks/*_test.py", "models/*_test.py", "trainers/trainer_test.py"]
EXCLUDED = {"orbax_checkpoint_test.py", "tensorboard_test.py"}  # need orbax / tensorboard


def keras_src() -> Path:
    out = subprocess.run([sys.executable, "-c", "import keras.src, os; print(os.path.dirname(keras.src.__file__))"],
                         capture_output=True, text=True, check=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    return Path(out.stdout.strip())


def copy_tests(target: Path) -> list[str]:
    src = keras_src()
    names = []
    for pattern in FILES:
        for path in sorted(src.glob(pattern)):
            if path.name in EXCLUDED:
                continue
            name = f"{path.parent.name}__{path.name}"
            text = path.read_text()
            # trainer_test.py imports jax at the top for its jax-only cases; jax is not installed here
            # (and must stay unimportable for Keras itself), so that one line goes; those cases are
            # skipped in both runs (repro_conftest.py).
            text = text.replace("\nimport jax\n", "\njax = None  # not installed here (tests/keras_suite/run.py)\n", 1)
            (target / name).write_text(text)
            names.append(name)
    shutil.copy(HERE / "repro_conftest.py", target / "conftest.py")
    return names


def run(label: str, route: bool, extra: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix=f"keras-suite-{label}-") as tmp:
        work = Path(tmp)
        copy_tests(work)
        report = work / "report.xml"
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "KERAS_SUITE_ROUTE": "1" if route else "0",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "KERAS_REPRO_DIR": str(work / "runs")}
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x" if False else "-q",
                        f"--junitxml={report}", str(work), *extra], cwd=work, env=env,
                       stdout=subprocess.DEVNULL if not os.environ.get("KERAS_SUITE_VERBOSE") else None)
        seconds = time.monotonic() - start
        records = len(list((work / "runs").glob("*/run.json")))  # proof that fits went through keras_repro
        outcomes = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            kids = {child.tag for child in case}
            outcomes[name] = ("failed" if kids & {"failure", "error"} else "skipped" if "skipped" in kids else "passed")
        print(f"{label}: {sum(v == 'passed' for v in outcomes.values())} passed, "
              f"{sum(v == 'failed' for v in outcomes.values())} failed, "
              f"{sum(v == 'skipped' for v in outcomes.values())} skipped in {seconds:.0f} s; "
              f"{records} keras_repro run records", flush=True)
        return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["plain", "routed"])
    parser.add_argument("--save", help="write both outcome maps to this JSON file")
    args, extra = parser.parse_known_args()
    results = {}
    for label, route in (("plain", False), ("routed", True)):
        if args.only in (None, label):
            results[label] = run(label, route, extra)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(results, indent=1, sort_keys=True))
    if len(results) < 2:
        return 0
    plain, routed = results["plain"], results["routed"]
    diff = sorted(n for n in set(plain) | set(routed) if plain.get(n) != routed.get(n))
    for name in diff:
        print(f"  {name}: plain {plain.get(name)}, routed {routed.get(name)}")
    print(f"difference: {len(diff)} test(s)")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
