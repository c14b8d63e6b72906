"""MkDocs hook: run every tutorial script in docs/tutorials/ and embed its code and output.

A tutorial page holds the marker ``<!-- heatlab-tutorial: NAME.py -->``. At build time (``on_files``)
each ``docs/tutorials/*.py`` runs (all at once) in a fresh temporary folder with this Python; a script that fails
fails the build with its name and the end of its output. The marker becomes the script (as it ran),
its output (stdout and stderr, as a terminal shows them) and run time, and the PNG files the script wrote under ``figures/`` in its folder.
``HEATLAB_DOCS_SKIP_TUTORIALS=1`` skips running them (for a quick ``mkdocs serve``; the pages then say so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

MARKER = "<!-- heatlab-tutorial: {} -->"
_results: dict[str, dict] = {}
_tmp: list[str] = []


def _run(script: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"heatlab-tutorial-{script.stem}-"))
    _tmp.append(str(work))
    env = dict(os.environ, MPLBACKEND="Agg", COLUMNS="100", NO_COLOR="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script.resolve())], cwd=work, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise PluginError(f"tutorial {script} failed (exit {proc.returncode}):\n{tail}")
    print(f"INFO    -  tutorial {script.name} ran in {seconds:.1f} s", file=sys.stderr)
    return {"code": script.read_text(), "output": proc.stdout.rstrip(), "seconds": seconds,
            "figures": sorted((work / "figures").glob("*.png"))}


def on_files(files, config):
    folder = Path(config["docs_dir"]) / "tutorials"
    scripts = sorted(folder.glob("*.py"))
    if os.environ.get("HEATLAB_DOCS_SKIP_TUTORIALS") == "1":
        for script in scripts:
            _results[script.name] = {"code": script.read_text(), "output": "(not run: HEATLAB_DOCS_SKIP_TUTORIALS=1)",
                                     "seconds": 0.0, "figures": []}
        return files
    # all at once (one thread waits on each): each is mostly one single-threaded process
    with ThreadPoolExecutor(len(scripts) or 1) as pool:
        for script, result in zip(scripts, pool.map(_run, scripts)):
            _results[script.name] = result
    for script in scripts:
        for png in _results[script.name]["figures"]:
            files.append(File.generated(config, f"tutorials/{script.stem}/{png.name}", abs_src_path=str(png)))
    return files


def _render(name: str, result: dict) -> str:
    figures = "".join(f"\n![{png.stem}]({Path(name).stem}/{png.name})\n" for png in result["figures"])
    return (f"```python title=\"{name}\"\n{result['code'].rstrip()}\n```\n\n"
            f"Output of this run (built with the docs, {result['seconds']:.0f} s on the build machine):\n\n"
            f"```text\n{result['output']}\n```\n{figures}")


def on_page_markdown(markdown: str, page, config, files) -> str:
    for name, result in _results.items():
        markdown = markdown.replace(MARKER.format(name), _render(name, result))
    if "<!-- heatlab-tutorial:" in markdown:
        raise PluginError(f"{page.file.src_uri} names a tutorial that is not in docs/tutorials/")
    return markdown


def on_post_build(config):
    while _tmp:
        shutil.rmtree(_tmp.pop(), ignore_errors=True)
