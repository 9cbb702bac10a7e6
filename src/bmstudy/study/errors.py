"""Stage failures: :class:`StageError` names the stage, the notebook and the failing source cell."""
from __future__ import annotations

from pathlib import Path

__all__ = ["StageError", "stage_error", "source_cell_number"]


class StageError(RuntimeError):
    """A stage failed; the message names the stage, the notebook and the failing cell.

    Attributes
    ----------
    stage : str
        The stage name.
    notebook : Path
        The source notebook.
    cell_index : int or None
        1-based number of the failing cell in the source notebook (``None`` when not a cell error).
    executed_notebook : Path or None
        The partially executed notebook with the traceback.
    """

    def __init__(self, message: str, stage: str, notebook: Path, cell_index: int | None = None,
                 executed_notebook: Path | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.notebook = notebook
        self.cell_index = cell_index
        self.executed_notebook = executed_notebook


def stage_error(stage: str, notebook: Path, exc: BaseException, failed_nb: Path) -> StageError:
    """A :class:`StageError` naming the stage, the notebook and (for a cell error) the source cell."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        src = (exc.source or "").strip().splitlines()
        first = src[0] if src else ""
        # papermill counts cells of the executed notebook, which has one injected-parameters cell
        # after the parameters cell; translate back to the source notebook's numbering.
        cell = source_cell_number(failed_nb, exc.cell_index)
        msg = (f"stage {stage} failed: notebook {notebook}, cell {cell} "
               f"(execution count {exc.exec_count}; source starts {first!r}): {exc.ename}: {exc.evalue}. "
               f"Executed notebook with the traceback: {failed_nb}")
        return StageError(msg, stage, notebook, cell, failed_nb)
    msg = f"stage {stage} failed: notebook {notebook}: {type(exc).__name__}: {exc}"
    if failed_nb.exists():
        msg += f". Partially executed notebook: {failed_nb}"
    return StageError(msg, stage, notebook, None, failed_nb if failed_nb.exists() else None)


def source_cell_number(executed: Path, index: int) -> int:
    """1-based number of the failing cell in the SOURCE notebook (the injected cell is not counted)."""
    try:
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
        injected = [i for i, c in enumerate(nb.cells)
                    if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        return index + 1 - sum(1 for i in injected if i < index)
    except Exception:  # noqa: BLE001 - best effort; fall back to papermill's numbering
        return index + 1
