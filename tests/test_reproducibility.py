"""Same scenario and seed: bit-identical files, across processes and hash seeds."""

import os
import subprocess
import sys
from pathlib import Path


def run_cli(out: Path, hashseed: str, *extra: str) -> Path:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "marginsim",
            "run",
            "default",
            "--steps",
            "240",
            "--set",
            "shocks.0.step=100",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return Path(proc.stdout.strip().splitlines()[-1].removeprefix("results: "))


def outputs(folder: Path) -> dict[str, bytes]:
    files = [folder / "metrics.parquet", *sorted((folder / "events").glob("*.parquet"))]
    return {f.name: f.read_bytes() for f in files}


def test_same_seed_is_bit_identical_across_processes_and_hash_seeds(tmp_path):
    a = outputs(run_cli(tmp_path / "a", "1"))
    b = outputs(run_cli(tmp_path / "b", "4242"))
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    c = outputs(run_cli(tmp_path / "c", "1", "--seed", "8"))
    assert c["metrics.parquet"] != a["metrics.parquet"]
    assert c["trades.parquet"] != a["trades.parquet"]
