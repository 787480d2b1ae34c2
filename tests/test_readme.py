"""The README is executable documentation: its set-up commands are CI's, its usage example runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"```{language}\n(.*?)```", README, flags=re.S)]


def test_readme_starts_with_exactly_two_setup_commands_that_ci_runs() -> None:
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    assert len(commands) == 2, "the set-up section must hold exactly two commands"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in commands:
        assert command.strip() in ci, f".ci/run does not run the README command: {command.strip()}"
    assert "constraints.txt" in commands[0] and "examples/quickstart.py" in commands[0]
    assert "pytest" in commands[1]


def test_usage_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code_blocks("python")[0], "README.md", "exec"), {})
    assert (tmp_path / "checkpoints" / "tiny" / "model.safetensors").is_file()
