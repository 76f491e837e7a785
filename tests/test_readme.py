"""The README is executable documentation: its Python example runs as written, and CI runs its test command."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_example_runs_as_written(tmp_path):
    """Run in a fresh interpreter in an empty folder, as a user pasting it would (it makes its own data); then the
    command-line example that uses that data, line by line."""
    (example,) = blocks("python")
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.split()[0] in ("polyps", "shadows", "base") for line in lines), lines
    assert (tmp_path / "my-set" / "manifest.json").is_file()
    # then the command-line block that follows it, on the data and the set it made
    (commands,) = [block for block in blocks("bash") if "samcl segment my-set data/" in block and "--auto" not in block]
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "samcl", line
        done = subprocess.run([sys.executable, "-m", "samcl.cli", *argv[1:]], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, (line, done.stderr[-3000:])
        if argv[1] == "segment":
            (result,) = json.loads(done.stdout)["results"]
            assert result["domain"] == "polyps" and result["foreground"] > 0.01, result  # the point is on the polyp
            assert (tmp_path / "mask.png").is_file() and (tmp_path / "overlay.png").is_file()


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in [line.strip() for block in blocks("bash") for line in block.splitlines()], ci
