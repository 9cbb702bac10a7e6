"""Toy stage notebooks for the runner tests (tiny cells that log what ran)."""
from __future__ import annotations

import nbformat


def toy_notebook(params: str, *cells: str, title: str = "toy stage") -> nbformat.NotebookNode:
    """A python3 notebook: a ``# title`` cell, a ``parameters`` cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"),
                nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def log_cell(name: str) -> str:
    """A cell that appends ``name`` to the notebook's ``work_log`` file."""
    return f"with open(work_log, 'a') as fh:\n    fh.write({name!r} + '\\n')"
