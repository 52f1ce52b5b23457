"""Every ```python block of README.md and docs/*.md runs, and every script in examples/ runs with --small.

The blocks of one document run in order in one namespace (a document reads top to bottom, like a
notebook), in a temporary working directory with HF_HUB_OFFLINE=1. Running one block alone runs
the blocks before it in its document first (a fast block must not need a slow block's names). An HTML comment on the lines just before a block marks it:

    <!-- snippet: slow -->            a long run (a packaged LLM, training): marked slow, still part of CI
    <!-- snippet: skip REASON -->     cannot run here at all (e.g. needs a GPU); REASON is shown

Examples run in this process (runpy, ``sys.argv = [script, "--small"]``) from a temporary directory.
"""

from __future__ import annotations

import os
import re
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
SLOW_EXAMPLES = {"task_sentiment.py", "task_alignment.py", "task_dialogue.py", "task_generation_monitor.py",
                 "explain_classifier.py"}  # load a packaged LLM / Whisper, or fine-tune: a few seconds to a minute

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_MARK = re.compile(r"<!--\s*snippet:\s*(slow|skip)\b\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    doc: Path
    index: int  # within its document
    line: int  # 1-based line of the opening fence
    code: str
    mark: str  # "", "slow" or "skip"
    reason: str

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"


def extract_blocks(doc: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, each with the marker comment just above it (if any)."""
    text = doc.read_text(encoding="utf-8")
    blocks = []
    for i, m in enumerate(_FENCE.finditer(text)):
        before = [ln for ln in text[:m.start()].splitlines() if ln.strip()]
        mark = _MARK.search(before[-1]) if before else None
        blocks.append(Block(doc, i, text.count("\n", 0, m.start()) + 1, m.group(1),
                            mark.group(1) if mark else "", mark.group(2) if mark else ""))
    return blocks


ALL_BLOCKS = [b for d in DOCS for b in extract_blocks(d)]


def _params():
    for b in ALL_BLOCKS:
        marks = [pytest.mark.slow] if b.mark == "slow" else []
        if b.mark == "skip":
            marks.append(pytest.mark.skip(reason=b.reason or "marked skip"))
        yield pytest.param(b, id=b.id, marks=marks)


@pytest.fixture(scope="module")
def doc_state(tmp_path_factory):
    """Per document: its temporary directory, namespace and the indices of the blocks already run."""
    return {}


@pytest.fixture
def offline(monkeypatch):
    """Offline, headless, and torch's thread count restored afterwards (a snippet may set it)."""
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _run_code(code: str, where: str, ns: dict, cwd: Path) -> None:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        exec(compile(code, where, "exec"), ns)
    finally:
        os.chdir(old)
        import matplotlib.pyplot as plt

        plt.close("all")


@pytest.mark.parametrize("block", list(_params()))
def test_doc_block_runs(block: Block, doc_state, tmp_path_factory, offline):
    state = doc_state.setdefault(block.doc, {"dir": tmp_path_factory.mktemp(block.doc.stem), "ns": {"__name__": "__doc__"},
                                             "done": set(), "failed": set()})
    for b in [x for x in ALL_BLOCKS if x.doc == block.doc and x.index <= block.index]:
        if b.index in state["done"] or b.mark == "skip" or (b.mark == "slow" and b is not block and block.mark != "slow"):
            continue  # a fast block never depends on a slow one (so `-m "not slow"` stays fast)
        if b.index in state["failed"]:
            pytest.fail(f"an earlier block of {b.doc.name} failed ({b.id}); this one depends on its namespace")
        try:
            _run_code(b.code, f"{b.doc.relative_to(ROOT)}:{b.line}", state["ns"], state["dir"])
        except BaseException:
            state["failed"].add(b.index)
            raise
        state["done"].add(b.index)


def test_blocks_found():
    # the extractor sees the blocks (a broken fence regex would make the test above vacuous)
    assert any(b.doc.name == "README.md" for b in ALL_BLOCKS)
    assert len(ALL_BLOCKS) >= 8
    assert all(b.code.strip() for b in ALL_BLOCKS)


def test_extract_markers(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("a\n```python\nx = 1\n```\n<!-- snippet: slow -->\n\n```python\ny = 2\n```\n"
                  "<!-- snippet: skip needs a GPU -->\n```python\nz = 3\n```\n```bash\nls\n```\n", encoding="utf-8")
    got = [(b.code, b.mark, b.reason, b.line) for b in extract_blocks(md)]
    assert got == [("x = 1\n", "", "", 2), ("y = 2\n", "slow", "", 7), ("z = 3\n", "skip", "needs a GPU", 11)]


@pytest.mark.parametrize("script", [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW_EXAMPLES else [])
                                    for p in EXAMPLES])
def test_example_runs_small(script: Path, tmp_path, monkeypatch, offline, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "--small"])
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    out = capsys.readouterr().out
    assert out.strip(), f"{script.name} printed nothing"
