"""The seed story, end to end: a rerun that does not match, and what keras_repro says about it.

    make demo            # or: python examples/seed_story.py --out demo-out

A baseline CNN trains on scikit-learn's 8x8 digits. Then the "same" script is rerun four ways, each in a
fresh process, and `keras-repro diff` explains every difference against the baseline:
  (a) the team added images under the same data folder,
  (b) someone trained with another learning rate,
  (c) nobody seeded anything (mode "off", as plain Keras would run),
  (d) bitwise mode, twice: identical bits.
Finally `keras-repro plot` overlays the curves (demo-out/curves.png).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TRAIN = HERE / "train_digits.py"


def train(label: str, out: Path, data_dir: Path, *flags: str) -> Path:
    """Runs train_digits.py in a fresh process; returns the path of the record it wrote."""
    records_file = out / f"{label}.records"
    records_file.unlink(missing_ok=True)
    env = dict(os.environ, KERAS_REPRO_RECORDS_FILE=str(records_file), TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, str(TRAIN), f"--data_dir={data_dir}", f"--repro_dir={out / 'runs'}", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"training run {label!r} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = [line for line in proc.stdout.splitlines() if line.startswith("validation error")]
    print(f"  {label:<28} {summary[-1].split('  record')[0] if summary else ''}")
    return Path(records_file.read_text().split()[-1])


def keras_repro_cli(*args: str) -> int:
    print(f"$ keras-repro {' '.join(args)}")
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-m", "keras_repro", *args])


def short(path: Path) -> str:
    return str(path.parent.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="folder for data, records and curves.png")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    data = out / "data"
    bigger = out / "data-after-the-team-added-images"

    sys.path.insert(0, str(HERE))
    from train_digits import write_digits

    write_digits(str(data))
    shutil.copytree(data, bigger)
    base = np.load(data / "digits.npz")
    rng = np.random.default_rng(0)  # "new images": shifted, noisier copies of 500 digits
    pick = rng.choice(len(base["labels"]), 500, replace=False)
    new_images = np.clip(np.roll(base["images"][pick], 1, axis=2) + rng.normal(0, 0.25, (500, 8, 8)), 0, 1)
    np.savez(bigger / "new-scans.npz", images=new_images.astype("float32"), labels=base["labels"][pick])

    seeded = ["--repro_seed=42", "--repro_mode=bitwise"]
    print("Training (each run in a fresh process):")
    baseline = train("baseline", out, data, *seeded)
    added = train("(a) team added images", out, bigger, *seeded)
    lr = train("(b) learning rate 3e-3", out, data, *seeded, "--learning_rate=0.003")
    unseeded = train("(c) no seeds (mode off)", out, data, "--repro_mode=off")
    again = train("(d) bitwise, again", out, data, *seeded)
    print()
    for title, other in (("(a) the team added images", added), ("(b) another learning rate", lr),
                         ("(c) nothing seeded", unseeded), ("(d) bitwise twice", again)):
        print(f"== {title}: baseline {short(baseline)} vs {short(other)}")
        code = keras_repro_cli("diff", str(baseline), str(other))
        print(f"(exit code {code}: {'identical' if code == 0 else 'different'})\n")
    png = out / "curves.png"
    labels = ["baseline", "(a) team added images", "(b) learning rate 3e-3", "(c) no seeds", "(d) bitwise, again"]
    keras_repro_cli("plot", str(baseline), str(added), str(lr), str(unseeded), str(again), "-o", str(png),
                    *(arg for label in labels for arg in ("--label", label)))
    print(f"\nCurves: {png}\nRecords: {out / 'runs'}  (try: keras-repro show {baseline.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
