"""bmstudy.reporting: the study's tables, figures and the Jupyter Book report.

* :mod:`.tables` - the paper's tables computed from a run (re-exports :mod:`.paper`, :mod:`.stage_tables`
  and the renderers of :mod:`.render`)
* :mod:`.figures` - the paper's figures and the stage notebooks' plots
* :mod:`.book` - publishing tables / figures from notebooks and building the book

Names load their submodule on first access (:mod:`bmstudy._lazy`).
"""
from __future__ import annotations

from .._lazy import exports_of, lazy_exports

_SPEC: dict[str, tuple[str, ...]] = {
    'render': ('METRIC_LABELS', 'SET_LABELS', 'GROUP_LEVELS', 'BY_LABELS', 'format_p', 'set_header', 'to_html', 'to_latex',),
    'paper': ('PAPER_N', 'paper_table1', 'paper_table2', 'paper_table3', 'format_paper_table3',),
    'stage_tables': ('INFERENCE_PHASES', 'settings_table', 'brain_zscore_check', 'inference_timing_table',),
    'tables': ('median_iqr', 'summary_stats', 'table1', 'table2', 'table3', 'subgroup_table', 'all_subgroup_tables', 'format_subgroup_table', 'subgroup_sections', 'auc_subgroup_table', 'significance_counts', 'lesion_detection_table', 'compare_with_paper', 'table2_vs_paper',),
    'figures': ('SIZE_BINS', 'save_figure', 'largest_lesion_slice', 'select_overlay_cases', 'load_overlay_cases', 'figure3_overlays', 'figure4_subgroups', 'timing_figure', 'lesion_size_figure', 'training_curves', 'inference_phases_figure',),
    'book': ('SUMMARY_DIR', 'RESULTS_FIRST', 'STUDY_PART_CAPTION', 'REMOTE_MIME_PREFIXES', 'HIDDEN_CELL_TAGS', 'STAGE_DESCRIPTIONS', 'publish_table', 'publish_figure', 'show_table', 'show_figure', 'notebook_reporter', 'executed_notebooks', 'prepare_chapter', 'draw_pipeline_diagram', 'summary_items', 'source_line', 'results_page', 'provenance_page', 'remote_assets', 'strip_thebe', 'build_book',),
}
_SUBMODULES: tuple[str, ...] = ('book', 'figures', 'paper', 'render', 'stage_tables', 'tables',)

__all__ = ['render', 'paper', 'stage_tables', 'tables', 'figures', 'book', 'METRIC_LABELS', 'SET_LABELS', 'GROUP_LEVELS', 'BY_LABELS', 'format_p', 'set_header', 'to_html', 'to_latex', 'PAPER_N', 'paper_table1', 'paper_table2', 'paper_table3', 'format_paper_table3', 'INFERENCE_PHASES', 'settings_table', 'brain_zscore_check', 'inference_timing_table', 'median_iqr', 'summary_stats', 'table1', 'table2', 'table3', 'subgroup_table', 'all_subgroup_tables', 'format_subgroup_table', 'subgroup_sections', 'auc_subgroup_table', 'significance_counts', 'lesion_detection_table', 'compare_with_paper', 'table2_vs_paper', 'SIZE_BINS', 'save_figure', 'largest_lesion_slice', 'select_overlay_cases', 'load_overlay_cases', 'figure3_overlays', 'figure4_subgroups', 'timing_figure', 'lesion_size_figure', 'training_curves', 'inference_phases_figure', 'SUMMARY_DIR', 'RESULTS_FIRST', 'STUDY_PART_CAPTION', 'REMOTE_MIME_PREFIXES', 'HIDDEN_CELL_TAGS', 'STAGE_DESCRIPTIONS', 'publish_table', 'publish_figure', 'show_table', 'show_figure', 'notebook_reporter', 'executed_notebooks', 'prepare_chapter', 'draw_pipeline_diagram', 'summary_items', 'source_line', 'results_page', 'provenance_page', 'remote_assets', 'strip_thebe', 'build_book']
__getattr__, __dir__ = lazy_exports(__name__, exports_of(_SPEC), _SUBMODULES)
