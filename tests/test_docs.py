"""The documentation stays true: the generated reference matches the code, every relative link
resolves, and the commands the guides mark as runnable run.

A fenced block whose info string carries `run` (```` ```bash run ````) runs in the default
suite and must take seconds; one that carries `run-slow` runs under `python -m pytest -m slow`.
`bash`/`sh` blocks run with `bash -e -o pipefail`, `python` blocks with this interpreter; each in
a fresh temporary directory, exactly as written, and must exit 0 (docs/index.md says the same to
writers).
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env

DOCS = REPO / "docs"
MARKS = {"run": "default", "run-slow": "slow"}
LANGUAGES = {"bash": "bash", "sh": "bash", "python": "python"}
OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def doc_files():
    return [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted(DOCS.rglob("*.md"))]


def fenced_blocks(path):
    """(line, heading, info words, code) of every fenced block in a markdown file: the section
    heading it sits under ("" under the page's title), and its code un-indented by the fence's
    own indentation (a block inside a list item)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index, heading = [], 0, ""
    while index < len(lines):
        opening = OPENING.match(lines[index])
        if not opening:
            if re.match(r"#{2,6} ", lines[index]):
                heading = lines[index].lstrip("#").strip()
            elif lines[index].startswith("# "):
                heading = ""  # under the page's title: the page alone names the block
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body, start = [], index + 1
        index += 1
        while index < len(lines) and not closing.match(lines[index]):
            line = lines[index]
            body.append(line[indent:] if line[:indent].strip() == "" else line)
            index += 1
        blocks.append((start, heading, opening["info"].split(), "\n".join(body) + "\n"))
        index += 1
    return blocks


def slug(text):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def runnable_blocks(suite):
    """pytest params of the blocks marked for `suite`, named page:heading (`-2`, `-3` for a
    heading's later blocks), e.g. `your-own-data:a-csv`, or the page alone for a block under its
    title, for `-k`."""
    found, seen = [], {}
    for path in doc_files():
        if not path.is_file():
            continue
        page = "README" if path == REPO / "README.md" else path.stem
        for line, heading, info, code in fenced_blocks(path):
            marks = [word for word in info[1:] if word in MARKS]
            if marks and MARKS[marks[0]] == suite:
                name = f"{page}:{slug(heading)}" if heading else page
                seen[name] = seen.get(name, 0) + 1
                name += f"-{seen[name]}" if seen[name] > 1 else ""
                found.append(pytest.param(info[0], code, id=name))
    return found


def run_block(language, code, tmp_path, timeout):
    """Run one block as a user would: in a new directory, the workbench importable, TensorFlow's
    C++ logs off."""
    env = cli_env(TF_CPP_MIN_LOG_LEVEL=3,
                  PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")])),
                  PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                        os.environ.get("PATH", "")]))
    # The block's file sits beside the directory it runs in, so that directory starts empty.
    script = tmp_path / ("block.sh" if LANGUAGES[language] == "bash" else "block.py")
    script.write_text(code, encoding="utf-8")
    command = (["bash", "-e", "-o", "pipefail", str(script)] if LANGUAGES[language] == "bash"
               else [sys.executable, str(script)])
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- block ---\n{code}--- stdout ---\n{done.stdout[-3000:]}"
        f"--- stderr ---\n{done.stderr[-3000:]}")


def test_generated_reference_is_current():
    spec = importlib.util.spec_from_file_location("generate_reference",
                                                  DOCS / "generate_reference.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    stale = generator.stale()
    assert not stale, ("stale generated reference: "
                       + ", ".join(str(p.relative_to(REPO)) for p in stale)
                       + "; run `python docs/generate_reference.py` and commit the result")


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose_lines(path):
    """The lines of a markdown file outside fenced blocks, inline code removed."""
    lines, closing = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = OPENING.match(line)
        if closing is None and opening:
            closing = re.compile(rf"^ *{re.escape(opening['fence'][0])}"
                                 rf"{{{len(opening['fence'])},}}\s*$")
        elif closing is not None:
            if closing.match(line):
                closing = None
        else:
            lines.append(re.sub(r"(`+)(.*?)\1", r"\2" if line.startswith("#") else "", line))
    return lines


def anchors(path):
    """GitHub's anchors for the headings of a markdown file (repeats get -1, -2, ...)."""
    found, counts = set(), {}
    for line in prose_lines(path):
        if re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            counts[base] = counts.get(base, -1) + 1
            found.add(base if counts[base] == 0 else f"{base}-{counts[base]}")
    return found


def test_relative_links_resolve():
    """Every relative link in README.md, docs/ and benchmarks/README.md names an existing file,
    and a `#heading` in it one of that page's headings."""
    broken = []
    for path in doc_files():
        if not path.is_file():
            continue
        for line in prose_lines(path):
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):
                    continue  # a URL
                file_part, _, fragment = target.partition("#")
                linked = (path.parent / file_part) if file_part else path
                where = f"{path.relative_to(REPO)}: {target}"
                if not linked.exists():
                    broken.append(f"{where} (no such file)")
                elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                    broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_runnable_marks_are_known():
    """A mistyped mark (`run-slwo`) or a runnable block in a language the runner does not run
    would silently drop a command from the checks."""
    problems = []
    for path in doc_files():
        if not path.is_file():
            continue
        for line, _, info, _ in fenced_blocks(path):
            marks = [word for word in info[1:] if word.startswith("run")]
            where = f"{path.relative_to(REPO)}:{line}"
            if any(mark not in MARKS for mark in marks):
                problems.append(f"{where}: unknown mark in '{' '.join(info)}' "
                                f"(known: {', '.join(MARKS)})")
            elif marks and (not info or info[0] not in LANGUAGES):
                problems.append(f"{where}: runnable blocks must be one of {', '.join(LANGUAGES)}")
    assert not problems, "\n".join(problems)
    assert runnable_blocks("default") and runnable_blocks("slow")


@pytest.mark.parametrize("language, code", runnable_blocks("default"))
def test_default_block_runs(language, code, tmp_path):
    run_block(language, code, tmp_path, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("language, code", runnable_blocks("slow"))
def test_slow_block_runs(language, code, tmp_path):
    run_block(language, code, tmp_path, timeout=3600)
