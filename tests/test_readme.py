"""The README is executable documentation: its Python example runs as written, and CI runs its test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_example_runs_as_written(tmp_path):
    """Run in a fresh interpreter in an empty folder, as a user pasting it would (it makes its own data)."""
    (example,) = blocks("python")
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.split()[0] in ("polyps", "shadows", "base") for line in lines), lines
    assert (tmp_path / "my-set" / "manifest.json").is_file()


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in [line.strip() for block in blocks("bash") for line in block.splitlines()], ci
