"""The book's provenance page, and the rule that the published book shows no absolute machine paths.

:func:`provenance_page` renders ``runs/<name>/provenance.json`` and ``runs/<name>/plan.json`` (the
resolved study plan: one table per plan section, naming the stages that read it). :class:`PathDisplay`
rewrites paths for publication: relative to the run folder when inside it, else relative to the
repository, else only the file name (``.../name``); the book applies it to this page, the results page
and the chapters.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..utils import PathLike, get_logger

log = get_logger("bmstudy.reporting.provenance_page")

__all__ = ["REPO_ROOT", "PathDisplay", "provenance_page", "plan_tables", "dirty_suffix", "kv_table", "determinism_text"]


def _find_repo_root() -> Path | None:
    """The source checkout holding this package (src/bmstudy/reporting/ -> root), if it is one."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


#: The repository of an editable install (``None`` for an installed package).
REPO_ROOT: Path | None = _find_repo_root()
ELSEWHERE = "\N{HORIZONTAL ELLIPSIS}/"


@dataclass(frozen=True)
class PathDisplay:
    """How the published book shows a path of this machine.

    Parameters
    ----------
    run_roots : sequence of str
        Absolute folder(s) of the run (where it is now and where ``provenance.json`` says it ran).
    repo_root : str or None
        Absolute repository folder.
    """

    run_roots: tuple[str, ...]
    repo_root: str | None = None

    @classmethod
    def for_run(cls, run_dir: PathLike, provenance: Mapping[str, Any] | None = None,
                repo_root: PathLike | None = REPO_ROOT) -> "PathDisplay":
        """The display rule of one run.

        Parameters
        ----------
        run_dir : path-like
            The run folder.
        provenance : mapping, optional
            Its ``provenance.json`` (its ``run_dir`` is where the stages ran, if the folder moved).
        repo_root : path-like or None
            The repository (default :data:`REPO_ROOT`).

        Returns
        -------
        PathDisplay
        """
        roots = [str(Path(run_dir).resolve())]
        recorded = (provenance or {}).get("run_dir")
        if recorded and str(recorded) not in roots:
            roots.append(str(recorded))
        return cls(tuple(roots), str(Path(repo_root).resolve()) if repo_root else None)

    def path(self, value: Any) -> Any:
        """One path for display: run-relative, else repository-relative, else ``.../name``.

        Parameters
        ----------
        value : object
            A path-like string; anything else (or a relative path) is returned unchanged.

        Returns
        -------
        object
        """
        if not isinstance(value, (str, Path)) or not str(value).startswith("/"):
            return value
        p = PurePosixPath(str(value))
        for root in self.run_roots + ((self.repo_root,) if self.repo_root else ()):
            try:
                rel = p.relative_to(root)
            except ValueError:
                continue
            return rel.as_posix() if str(rel) != "." else "."
        return ELSEWHERE + p.name if p.name else "/"

    def value(self, obj: Any) -> Any:
        """:meth:`path` applied to every string in nested dicts and lists."""
        if isinstance(obj, Mapping):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return self.path(obj)

    def text(self, text: str) -> str:
        """Free text with the run and repository folders replaced (``<root>/x`` -> ``x``, ``<root>`` -> ``.``)."""
        for root in sorted(self.run_roots + ((self.repo_root,) if self.repo_root else ()), key=len, reverse=True):
            text = re.sub(re.escape(root) + r"(/|(?![\w.\-]))", lambda m: "" if m.group(1) == "/" else ".", text)
        return text


def dirty_suffix(git: Mapping[str, Any]) -> str:
    """``' (uncommitted changes)'`` when a provenance ``git`` record says the tree was dirty."""
    return " (uncommitted changes)" if git.get("dirty") else ""


def kv_table(rows: Iterable[tuple[Any, Any]], css: str = "bm-kv", header: Sequence[str] | None = None) -> str:
    """An HTML table of ``(key, value)`` rows (escaped).

    Parameters
    ----------
    rows : iterable of (object, object)
        Keys and values.
    css : str
        The table's class.
    header : sequence of str, optional
        Column headers.

    Returns
    -------
    str
    """
    head = ("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>") if header else ""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in
                   (v if isinstance(v, tuple) else (v,))) + "</tr>" for k, v in rows)
    return f"<table class=\"{css}\">{head}<tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    """A plan or parameter value as table text (nested values as compact JSON)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "null" if value is None else str(value)


def plan_tables(plan: Mapping[str, Any], readers: Mapping[str, Sequence[str]],
                show: Callable[[Any], Any] = lambda v: v) -> list[str]:
    """Markdown/HTML blocks showing every parameter of a ``plan.json``: study settings, then one table per section.

    Parameters
    ----------
    plan : mapping
        The plan as written (``StudyPlan.to_dict()``).
    readers : mapping
        ``{setting or section: [stage names]}`` (which stages read it).
    show : callable
        Applied to each value before display (:meth:`PathDisplay.value`).

    Returns
    -------
    list of str
        Lines of the page.
    """
    def who(key: str) -> str:
        return ", ".join(readers.get(key, ())) or "-"

    settings = [(k, (_cell(show(v)), who(k))) for k, v in plan.items() if not isinstance(v, Mapping)]
    lines = ["### Study settings", "", kv_table(settings, "bm-plan", ("setting", "value", "read by")), ""]
    for section, fields in plan.items():
        if isinstance(fields, Mapping):
            lines += [f"### `{section}`", "", f"Read by: {who(section)}.", "",
                      kv_table([(k, _cell(show(v))) for k, v in fields.items()], "bm-plan", ("field", "value")), ""]
    return lines


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("unreadable %s (%s): not shown in the book", path, exc)
        return None


def _overview(prov: Mapping[str, Any], show: PathDisplay, run: Path) -> str:
    git = prov.get("git") or {}
    man = prov.get("manifest") or {}
    plan = prov.get("plan") or {}
    rows = [("Run", prov.get("run")), ("Profile", prov.get("profile")),
            ("Study plan", f"{plan.get('path', 'plan.json')} (hash {plan.get('hash')})" if plan else "not recorded"),
            ("Git commit (last invocation)", f"{git.get('commit')}" + dirty_suffix(git)),
            ("Python", prov.get("python")), ("Platform", prov.get("platform")),
            ("Data manifest", show.path(man.get("path")) or man.get("source")), ("Manifest SHA-256", man.get("sha256")),
            ("User parameters", json.dumps(show.value(prov.get("user_parameters") or {}), sort_keys=True)),
            ("Last updated", prov.get("updated"))]
    return kv_table(rows + _training_rows(run))


def determinism_text(det: Mapping[str, Any] | None) -> str:
    """Whether a training run was deterministic, from its ``train_config.json`` ``determinism`` record."""
    det = det or {}
    if det.get("deterministic"):
        return "yes: op determinism and one inter-op thread; the same seed repeats this training exactly"
    if det:
        return (f"no: op determinism {'on' if det.get('op_determinism') else 'off'}, "
                f"{det.get('inter_op_threads')} inter-op thread(s) (0 = default); a rerun may differ")
    return "not recorded (trained before determinism was recorded)"


def _training_rows(run: Path) -> list[tuple[str, str]]:
    """Rows on how the run's model was trained: seed and whether training was deterministic."""
    rows = []
    for path in sorted(run.glob("*/train_config.json")):
        rec = _read_json(path) or {}
        seed = (rec.get("config") or {}).get("seed")
        rows.append((f"Training `{path.parent.name}` (seed {seed})",
                     f"{rec.get('status', '?')}; deterministic: {determinism_text(rec.get('determinism'))}"))
    return rows


def _stage_rows(stages: Mapping[str, Any]) -> list[str]:
    lines = ["<table class=\"bm-prov\"><thead><tr><th>stage</th><th>status</th><th>last action</th>"
             "<th>started (UTC)</th><th>finished (UTC)</th><th>seconds</th><th>fingerprint</th><th>commit</th>"
             "</tr></thead><tbody>"]
    for name, st in stages.items():
        sgit = st.get("git") or {}
        cells = [name, st.get("status"), st.get("last_action"), st.get("started"), st.get("finished"),
                 st.get("seconds"), str(st.get("fingerprint", ""))[:12],
                 str(sgit.get("commit") or "")[:10] + dirty_suffix(sgit)]
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return lines + ["</tbody></table>"]


def provenance_page(run_dir: PathLike, stages: Sequence[Any] = (), repo_root: PathLike | None = REPO_ROOT) -> str:
    """Markdown of the provenance page: run, code, plan, stages, parameters, packages.

    Parameters
    ----------
    run_dir : path-like
        The run folder (``provenance.json``, ``plan.json``).
    stages : sequence of Stage
        The study's stages (their ``plan_sections`` say which stages read each part of the plan).
    repo_root : path-like or None
        The repository, for repository-relative paths.

    Returns
    -------
    str
        Markdown with HTML tables; no absolute path of the run folder or the repository.
    """
    run = Path(run_dir)
    lines = ["# Provenance", ""]
    prov = _read_json(run / "provenance.json") if (run / "provenance.json").is_file() else None
    if prov is None:
        return "\n".join(lines + [f"*No readable provenance.json in run `{run.name}`.*", ""])
    show = PathDisplay.for_run(run, prov, repo_root)
    lines += ["Paths are shown relative to the run folder when inside it, else relative to the repository; "
              f"other paths of the machine by their file name only (`{ELSEWHERE}name`).", "",
              _overview(prov, show, run), "", "## Study plan", ""]
    plan_path = run / str((prov.get("plan") or {}).get("path") or "plan.json")
    plan = _read_json(plan_path) if plan_path.is_file() else None
    if plan is None:
        lines += ["*This run has no plan.json.*", ""]
    else:
        readers: dict[str, list[str]] = {}
        for s in stages:
            for key in getattr(s, "plan_sections", ()):
                readers.setdefault(key, []).append(s.name)
        lines += ["Every parameter of every stage after the profile and the overrides (`plan.json`); each stage's "
                  "fingerprint covers the parts of the plan it reads.", ""]
        lines += plan_tables(plan, readers, show.value)
    lines += ["## Stages", "", *_stage_rows(prov.get("stages") or {}), "", "## Parameters per stage", "",
              "What the runner passed to each notebook (layout folders, the plan file and user parameters).", ""]
    for name, st in (prov.get("stages") or {}).items():
        params = show.value(st.get("parameters") or {})
        rows = [(k, _cell(v)) for k, v in sorted(params.items())] or [("(none)", "")]
        lines += [f"**{name}** (notebook `{show.path(st.get('notebook')) or name}`)", "",
                  kv_table(rows, "bm-params", ("parameter", "value")), ""]
    lines += ["## Package versions", "", kv_table(sorted((prov.get("packages") or {}).items())), ""]
    return "\n".join(lines)
