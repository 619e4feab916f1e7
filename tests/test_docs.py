"""The documentation cannot drift from the code: every deck key has its line in docs/decks.md, and
every `rewl` command line shown in the README and docs/ parses with the command's own parser."""
from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from analysis.cli import parser as analysis_parser
from conftest import ROOT
from rewl import config
from rewl.cli import parser as rewl_parser

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def deck_keys() -> set[tuple[str, str]]:
    """(table, key) of every deck key, from the config dataclasses ([grid.x] / [grid.y] by hand:
    the grid is read by its own function)."""
    tables = {"run": config.RunConfig, "task": config.TaskConfig, "model": config.ModelConfig,
              "sampler": config.SamplerConfig, "windows": config.WindowsConfig, "schedule": config.ScheduleConfig,
              "exchange": config.ExchangeConfig, "init": config.InitConfig, "output": config.OutputConfig,
              "baseline": config.BaselineConfig}
    assert set(tables) | {"grid"} == set(config.TABLES)
    keys = {(table, f.name) for table, cls in tables.items() for f in dataclasses.fields(cls)}
    return keys | {(f"grid.{axis}", k) for axis in "xy" for k in ("min", "max", "width")} | {("grid.y", "mode")}


def documented_keys(text: str) -> set[tuple[str, str]]:
    """Keys named in the first cell of the decks page's table rows: `[table] key`, or several keys
    of one table (`[grid.x] min, max, width`, `[task] images`, `labels`)."""
    found = set()
    for row in re.findall(r"^\| (`\[[^|]+) \|", text, re.M):
        cell = row.replace("`", "")
        table, names = re.fullmatch(r"\[([a-z.]+)\] (.+)", cell).groups()
        found |= {(table, name.strip()) for name in names.split(",")}
    return found


def test_every_deck_key_has_its_line_in_the_decks_page():
    documented = documented_keys((ROOT / "docs" / "decks.md").read_text())
    missing = deck_keys() - documented
    assert not missing, f"docs/decks.md has no line for {sorted(missing)}"
    unknown = documented - deck_keys()
    assert not unknown, f"docs/decks.md documents keys the decks do not have: {sorted(unknown)}"


def _command_lines(text: str) -> tuple[list[str], list[str]]:
    """The `rewl` command lines of a page: whole lines of its shell code blocks, and inline code."""
    blocks = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang in ("", "sh", "bash", "console"):
            blocks += [line for line in body.splitlines() if line.strip()]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", prose)
    return blocks, inline


def _rewl_args(line: str) -> list[str] | None:
    """The arguments after `rewl` (also after mpiexec / srun and their options), or None when the
    line does not run rewl. Comments are dropped."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    if not tokens:
        return None
    if Path(tokens[0]).name in ("mpiexec", "srun"):
        tokens = tokens[next((i for i, t in enumerate(tokens) if Path(t).name == "rewl"), len(tokens)):]
    if not tokens or Path(tokens[0]).name != "rewl":
        return None
    return tokens[1:]


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction))


def _parse(args: list[str]) -> None:
    """Parse a whole command line as the command would (SystemExit on an error)."""
    if args[:1] == ["analyse"]:
        analysis_parser().parse_args(args[1:])
    else:
        rewl_parser().parse_args(args)


def _known(args: list[str]) -> str | None:
    """For a fragment in prose (`rewl run ... --resume`): the subcommand exists and every option
    it shows is one of that subcommand's; returns the problem, or None."""
    p, rest = rewl_parser(), list(args)
    if rest[:1] == ["analyse"]:
        p, rest = analysis_parser(), rest[1:]
    if rest and not rest[0].startswith("-") and rest[0] in _subparsers(p):
        p, rest = _subparsers(p)[rest[0]], rest[1:]
    elif rest and not rest[0].startswith("-"):
        return f"no command {rest[0]!r}"
    for token in rest:
        option = token.split("=")[0]
        if option.startswith("--") and option not in p._option_string_actions:
            return f"no option {option}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_in_the_docs_parses(page, capsys):
    blocks, inline = _command_lines(page.read_text())
    problems, seen = [], 0
    for line in blocks:
        args = _rewl_args(line)
        if args is None:
            continue
        seen += 1
        try:
            _parse(args)
        except SystemExit:
            problems.append(f"{line!r}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    for span in inline:
        args = _rewl_args(span)
        if not args or any(c in span for c in "[{|…") or "..." in span:
            continue        # a bare name, or a synopsis with placeholders ([--out DIR], {a,b}, ...)
        seen += 1
        if (why := _known(args)) is not None:
            problems.append(f"`{span}`: {why}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)
    if page.name in ("README.md", "commands.md", "analysis.md", "cluster.md"):
        assert seen >= 3, f"{page.name}: expected command lines, found {seen}"


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    linked = set(re.findall(r"\(docs/([a-z_]+\.md)\)", "\n".join(lines)))
    assert {p.name for p in PAGES[1:] if p.name != "spiral_sizes_summary.md"} <= linked


def test_the_readmes_first_run_is_the_example_whole():
    """The README's first run of your own network is examples/mlp_classification.py as it is (the
    suite runs that file under mpiexec, tests/test_module_task.py), nothing left out."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## A first run of your own network"):]
    block = section[section.index("```python\n") + len("```python\n"):]
    block = block[:block.index("```")]
    example = (ROOT / "examples" / "mlp_classification.py").read_text()
    code = example[example.index('"""', 3) + 4:]            # the file after its docstring
    assert block.strip() == code.strip()
