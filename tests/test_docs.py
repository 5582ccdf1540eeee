"""Every fenced block in README.md and docs/*.md runs, so the docs cannot drift from the code.

* ```python: run as a script in a fresh folder holding a copy of `examples/` and
  `pipelines.yaml`; a block whose first line is `# NAME.py` is written there as that file
  (and imported) for the blocks after it in the same document.
* ```yaml: a whole pipelines file (a top-level `pipelines:`), or one pipeline's body (`stages:`
  and `links:`), passes `pipeline validate`; a fragment of stages (`id: {type: ..., ...}`) names
  real stage types with valid parameters.
* ```sh / ```console: each line that starts with `pipeline ` (or `$ pipeline `) runs when it is
  quick and offline (`validate`, `stages`, `graph`, `run`); a server command (`serve`,
  `emulator`, ...) must at least name a real subcommand (`pipeline SUB --help` exits 0).
* ```json and ```xml parse.
* A block preceded by the line `<!-- not run: REASON -->` is skipped with that reason.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from pipeline.spec import resolve

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_EXE = Path(sys.executable).parent / "pipeline"
PIPELINE = [str(_EXE)] if _EXE.exists() else [sys.executable, "-m", "pipeline"]
QUICK = {"validate", "stages", "graph", "run", "--version"}
FENCE = re.compile(r"^```(\S*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (.+) -->$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # the opening fence, 1-based
    lang: str
    text: str
    skip: str | None
    index: int  # order within its document

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    out: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        prev = lines[start - 1].strip() if start > 0 else ""
        skip = NOT_RUN.match(prev)
        out.append(
            Block(doc, start + 1, m.group(1), "\n".join(body) + "\n",
                  skip.group(1) if skip else None, len(out))
        )  # fmt: skip
        i += 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]


def test_the_docs_have_blocks_and_every_fence_is_closed() -> None:
    assert len(ALL) >= 10
    for doc in DOCS:
        fences = [ln for ln in doc.read_text().splitlines() if ln.startswith("```")]
        assert len(fences) % 2 == 0, f"{doc.name}: an unclosed ``` fence"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copy(ROOT / "pipelines.yaml", tmp_path)
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["CALLER_PACE"] = "fast"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _module_name(block: Block) -> str | None:
    first = block.text.splitlines()[0] if block.text.strip() else ""
    m = re.fullmatch(r"#\s*([A-Za-z_][\w]*)\.py\s*", first)
    return m.group(1) if m else None


def _run(args: list[str], cwd: Path, what: str, timeout: float = 120) -> None:
    p = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{what}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"


def _python(block: Block, folder: Path) -> None:
    # the named modules defined earlier in the same document are there, as the reader has them
    for earlier in ALL:
        if earlier.doc == block.doc and earlier.index < block.index and earlier.lang == "python":
            name = _module_name(earlier)
            if name:
                (folder / f"{name}.py").write_text(earlier.text)
    name = _module_name(block)
    if name:
        (folder / f"{name}.py").write_text(block.text)
        _run([sys.executable, "-c", f"import {name}"], folder, block.where)
    else:
        (folder / "snippet.py").write_text(block.text)
        _run([sys.executable, "snippet.py"], folder, block.where)


def _yaml(block: Block, folder: Path) -> None:
    data: Any = YAML(typ="safe").load(io.StringIO(block.text))
    if isinstance(data, dict) and ("pipelines" in data or "stages" in data):
        path = folder / "doc.yaml"
        if "pipelines" in data:
            path.write_text(block.text)
        else:  # one pipeline's body: stages and links
            body = "".join(f"    {ln}\n" if ln else "\n" for ln in block.text.splitlines())
            path.write_text(f"version: 1\npipelines:\n  doc:\n{body}")
        _run([*PIPELINE, "validate", str(path)], folder, block.where)
        return
    assert isinstance(data, dict), f"{block.where}: a YAML fragment should map stage ids to stages"
    stages = {k: v for k, v in data.items() if isinstance(v, dict) and "type" in v}
    assert stages, f"{block.where}: no stage (`id: {{type: ...}}`) in this fragment"
    for sid, raw in stages.items():
        params = {k: v for k, v in raw.items() if k != "type"}
        spec = resolve(str(raw["type"]))
        _, problems = spec.validate(params)
        assert not problems, f"{block.where}: stage '{sid}': {problems}"


def _shell(block: Block, folder: Path) -> None:
    for raw in block.text.splitlines():
        line = raw.strip().removeprefix("$ ")
        if not line.startswith("pipeline "):
            continue
        args = shlex.split(line.split(" #", 1)[0].rstrip(" &"))[1:]
        if not args:
            continue
        if args[0] in QUICK:
            _run([*PIPELINE, *args], folder, f"{block.where}: {line}")
        else:
            _run([*PIPELINE, args[0], "--help"], folder, f"{block.where}: {line}")


@pytest.mark.parametrize("block", ALL, ids=[b.where for b in ALL])
def test_block_runs(block: Block, folder: Path) -> None:
    if block.skip:
        pytest.skip(block.skip)
    match block.lang:
        case "python":
            _python(block, folder)
        case "yaml" | "yml":
            _yaml(block, folder)
        case "sh" | "console" | "bash" | "shell":
            _shell(block, folder)
        case "json":
            json.loads(block.text)
        case "xml":
            ET.fromstring(block.text)
        case "" | "text" | "toml" | "ini" | "dockerfile" | "haproxy" | "mermaid" | "dot":
            pass  # output shown to the reader, or a file for another tool
        case other:
            pytest.fail(f"{block.where}: no rule to run a ```{other} block; add one in this test")
