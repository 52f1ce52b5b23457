"""The install split (pyproject.toml extras, attnscope._optional).

The core (capture, traces, analyses, static figures, the CLI) must work with every optional package
absent, and each optional feature must then stop with one line that names the extra installing it.
Absence is simulated faithfully in a child Python: every site-packages directory on its path is
replaced by a directory of links to all its entries except the hidden packages and their
``*.dist-info``, so that neither ``import`` nor ``importlib.metadata``/``find_spec`` sees them (putting
``None`` into ``sys.modules`` is not the same: libraries that probe ``sys.modules`` then break).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from attnscope import AttnscopeError
from attnscope._optional import MissingDependencyError, require

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "attnscope"

# optional top-level module -> (pip distribution, extra that installs it)
OPTIONAL = {
    "umap": ("umap-learn", "umap"),
    "plotly": ("plotly", "plotly"),
    "captum": ("captum", "captum"),
    "sacrebleu": ("sacrebleu", "seq2seq"),
    "gguf": ("gguf", "smollm2"),
    "accelerate": ("accelerate", "smollm2"),
    "pyarrow": ("pyarrow", "corpus"),
    "ray": ("ray", "distributed"),
    "fastapi": ("fastapi", "web"),
    "uvicorn": ("uvicorn", "web"),
    "anywidget": ("anywidget", "notebook"),
}
# what only the optional packages pull in: hidden too, so the core is shown not to need it
# (pydantic is not among them: typer needs it)
PULLED_IN = {"pynndescent": "pynndescent", "numba": "numba", "llvmlite": "llvmlite", "_plotly_utils": "plotly",
             "starlette": "starlette"}

# The child's first lines: hide the modules named in ATTNSCOPE_TEST_HIDE, then run the rest.
HIDE = r'''
import importlib, importlib.util, os, re, site, sys
def _norm(s): return re.sub(r"[-_.]+", "_", s).lower()
_mods = set(os.environ["ATTNSCOPE_TEST_HIDE"].split(","))
_dists = {_norm(d) for d in os.environ["ATTNSCOPE_TEST_HIDE_DISTS"].split(",")}
def _hidden(entry):
    if entry.endswith(".dist-info"):
        return _norm(entry.split("-")[0]) in _dists
    return entry.split(".")[0] in _mods
_sites = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
_base = os.environ["ATTNSCOPE_TEST_SHADOW"]
for _i, _sp in enumerate(_sites):
    if _sp not in sys.path:
        continue
    _shadow = os.path.join(_base, str(_i))
    if not os.path.isdir(_shadow):
        os.makedirs(_shadow)
        for _e in os.listdir(_sp):
            if not _hidden(_e):
                os.symlink(os.path.join(_sp, _e), os.path.join(_shadow, _e))
    sys.path[sys.path.index(_sp)] = _shadow
sys.path_importer_cache.clear()
importlib.invalidate_caches()
for _m in _mods:
    assert importlib.util.find_spec(_m) is None, f"{_m} is still importable"
'''


def _run(tmp_path: Path, hide: dict[str, str], body: str = "", args: list[str] | None = None,
         timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``body`` (Python) or ``python -m attnscope *args`` in a child where the modules ``hide`` (module ->
    distribution) are not installed. Inside ``body``, ``TMP`` is a fresh directory."""
    script = tmp_path / "child.py"
    main = (f"TMP = {str(tmp_path)!r}\n" + textwrap.dedent(body)) if args is None else \
        f"import runpy\nsys.argv = ['attnscope', *{args!r}]\nrunpy.run_module('attnscope', run_name='__main__')\n"
    script.write_text(HIDE + main)
    env = dict(os.environ, ATTNSCOPE_TEST_HIDE=",".join(hide), ATTNSCOPE_TEST_HIDE_DISTS=",".join(hide.values()),
               ATTNSCOPE_TEST_SHADOW=str(tmp_path / "site"), HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tmp_path)


ALL_HIDDEN = {**{m: d for m, (d, _) in OPTIONAL.items()}, **PULLED_IN}


def _message(name: str) -> str:
    dist, extra = OPTIONAL[name]
    return f"needs {dist}, which is not installed: pip install 'attnscope[{extra}]'"


# ---------------------------------------------------------------------------- require itself
def test_require_names_the_extra_and_is_an_attnscope_error():
    with pytest.raises(MissingDependencyError) as e:
        require("attnscope_no_such_module.sub", "corpus", "reading Parquet", "or use a .jsonl file")
    assert isinstance(e.value, AttnscopeError) and isinstance(e.value, ImportError)
    assert str(e.value) == ("reading Parquet needs attnscope_no_such_module, which is not installed: "
                            "pip install 'attnscope[corpus]' (or use a .jsonl file)")
    assert "\n" not in str(e.value)
    assert require("json", "x", "y") is json


def test_require_distinguishes_a_broken_install(monkeypatch, tmp_path):
    (tmp_path / "attnscope_broken_pkg.py").write_text("import attnscope_missing_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError, match=r"installed but does not import \(No module named "
                                                     r"'attnscope_missing_dependency_of_it'\); reinstall it: "
                                                     r"pip install 'attnscope\[umap\]'"):
        require("attnscope_broken_pkg", "umap", "head_projection(method='umap')")


def test_umap_is_named_by_its_pip_distribution(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # in-process absence is enough for a message check
    with pytest.raises(MissingDependencyError, match=re.escape(_message("umap"))):
        require("umap", "umap", "x")


# ---------------------------------------------------------------------------- static checks
def _top_level_imports(path: Path) -> set[str]:
    """Top-level package names imported at module level (not inside a function) of one source file."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        stack.extend(ast.iter_child_nodes(node))
    return names


# The server's modules are imported only after create_app() / `attnscope serve` required fastapi; its
# package, configuration and command stay importable without it.
SERVER_ENTRY = {"server/__init__.py", "server/config.py", "server/cli.py"}


def test_no_optional_package_is_imported_at_module_level():
    bad = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("server/") and rel not in SERVER_ENTRY:
            continue
        hit = _top_level_imports(path) & set(ALL_HIDDEN)
        if hit:
            bad[rel] = sorted(hit)
    assert not bad, f"optional packages imported at module level (import them inside the function, via require): {bad}"


def test_pyproject_core_and_extras_match_the_optional_modules():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()  # noqa: E731
    core = {name(r) for r in meta["dependencies"]}
    extras = {k: {name(r) for r in v} for k, v in meta["optional-dependencies"].items()}
    for module, (dist, extra) in OPTIONAL.items():
        assert dist not in core, f"{dist} must not be a core dependency"
        assert dist in extras[extra], f"extra {extra!r} must install {dist} (for {module})"
    every = {e for e in extras if e not in ("all", "dev")}
    all_req = meta["optional-dependencies"]["all"]
    assert len(all_req) == 1 and set(re.search(r"\[(.*)\]", all_req[0]).group(1).split(",")) == every
    assert not any("==" in r for r in meta["dependencies"]), "pyproject gives ranges; exact pins live in constraints.txt"
    pinned = {name(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    wanted = core | set().union(*extras.values()) - {"attnscope"}
    assert wanted <= pinned, f"constraints.txt lacks {sorted(wanted - pinned)}"


# ---------------------------------------------------------------------------- children with packages hidden
CORE_AND_ENTRY_POINTS = """
import json, pathlib, sys
import attnscope
from attnscope import analysis, attribution, corpus, render, seq2seq, server, tasks  # every package imports
from attnscope.analysis import run_analysis
from attnscope.capture import capture
from attnscope.models import load_model
from attnscope.render import layer_head_grid, save_figure

tmp = pathlib.Path(TMP)
lm = load_model("minilm")
trace = capture(lm, "Attention is all you need.", mode="full")
out = {"stats": list(trace.head_stats()["entropy"].shape)}
for name in ("head_stats", "rollout", "flow", "attention_graph", "head_projection"):
    run_analysis(name, trace)
out["png"] = [str(p) for p in save_figure(layer_head_grid(trace), tmp / "grid", formats=("png",))]
out["loaded_hidden"] = sorted(m for m in HIDDEN if m in sys.modules)

def attempt(f):
    try:
        f()
    except attnscope.AttnscopeError as e:
        return type(e).__name__ + ": " + str(e)
    except BaseException as e:
        return "WRONG " + type(e).__name__ + ": " + str(e)
    return "NO ERROR"

(tmp / "texts.txt").write_text("one\\ntwo\\n")
(tmp / "texts.parquet").write_bytes(b"PAR1")
(tmp / "model.gguf").write_bytes(b"GGUF")
from attnscope.attribution.captum_methods import captum_attributions
from attnscope.converters.smollm2_gguf import convert_smollm2
from attnscope.corpus.pipeline import run_corpus
from attnscope.corpus.reader import read_records
from attnscope.render.flow3d import write_flow_3d_html
from attnscope.seq2seq.train import evaluate
out["umap"] = attempt(lambda: run_analysis("head_projection", trace, method="umap"))
out["plotly"] = attempt(lambda: write_flow_3d_html(trace, tmp / "flow.html"))
out["captum"] = attempt(lambda: captum_attributions(lm, "Attention is all you need."))
out["sacrebleu"] = attempt(lambda: evaluate(None, None, []))
out["gguf"] = attempt(lambda: convert_smollm2(tmp / "model.gguf", tmp / "converted"))
out["pyarrow"] = attempt(lambda: run_corpus(tmp / "texts.txt", tmp / "stats.parquet", lm))
out["pyarrow_read"] = attempt(lambda: list(read_records(tmp / "texts.parquet")))
out["fastapi"] = attempt(lambda: server.create_app())
print("RESULT" + json.dumps(out))
"""


def _result(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, f"child failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT"):])


@pytest.mark.slow
def test_core_works_and_each_extra_is_named_with_every_optional_package_absent(tmp_path):
    body = f"HIDDEN = {sorted(ALL_HIDDEN)!r}\n" + CORE_AND_ENTRY_POINTS
    out = _result(_run(tmp_path, ALL_HIDDEN, body))
    assert out["stats"] == [6, 12] and out["loaded_hidden"] == []
    assert [Path(p).suffix for p in out["png"]] == [".png"] and all(Path(p).stat().st_size > 0 for p in out["png"])
    expected = {"umap": "umap", "plotly": "plotly", "captum": "captum", "sacrebleu": "sacrebleu", "gguf": "gguf",
                "pyarrow": "pyarrow", "pyarrow_read": "pyarrow", "fastapi": "fastapi"}
    for key, module in expected.items():
        assert out[key].startswith("MissingDependencyError: ") and _message(module) in out[key], (key, out[key])


def test_cli_without_optional_packages(tmp_path):
    help_ = _run(tmp_path, ALL_HIDDEN, args=["--help"])
    assert help_.returncode == 0 and "corpus" in help_.stdout, help_.stderr[-2000:]
    (tmp_path / "texts.txt").write_text("one\ntwo\n")
    for args, module in ((["corpus", "texts.txt", "--out", "stats.parquet"], "pyarrow"), (["serve"], "fastapi")):
        proc = _run(tmp_path, ALL_HIDDEN, args=args)
        err = proc.stderr.strip()
        assert proc.returncode == 2, (args, proc.returncode, err[-2000:])
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and _message(module) in err, (args, err)
    assert not (tmp_path / "stats.parquet").exists()


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("pyarrow", "gguf")),
                    reason="needs pyarrow and gguf installed (pip install 'attnscope[corpus,smollm2]')")
def test_ray_and_accelerate_absent_alone(tmp_path):
    """The two packages whose absence the all-absent run cannot show (another package is asked first)."""
    body = """
    import json, pathlib
    from attnscope import AttnscopeError
    from attnscope.converters.smollm2_gguf import convert_smollm2
    from attnscope.corpus.pipeline import run_corpus
    tmp = pathlib.Path(TMP)
    (tmp / "texts.txt").write_text("one\\n")
    (tmp / "model.gguf").write_bytes(b"GGUF")
    out = {}
    for key, f in (("ray", lambda: run_corpus(tmp / "texts.txt", tmp / "stats.parquet", "minilm", engine="ray")),
                   ("accelerate", lambda: convert_smollm2(tmp / "model.gguf", tmp / "converted"))):
        try:
            f()
            out[key] = "NO ERROR"
        except AttnscopeError as e:
            out[key] = type(e).__name__ + ": " + str(e)
    print("RESULT" + json.dumps(out))
    """
    out = _result(_run(tmp_path, {"ray": "ray", "accelerate": "accelerate"}, body))
    for module in ("ray", "accelerate"):
        assert out[module].startswith("MissingDependencyError: ") and _message(module) in out[module], out[module]
    assert not (tmp_path / "stats.parquet").exists()
