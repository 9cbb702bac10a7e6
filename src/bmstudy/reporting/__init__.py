"""bmstudy.reporting."""
from __future__ import annotations

from . import tables
from .tables import (METRIC_LABELS, SET_LABELS, GROUP_LEVELS, format_p, median_iqr, summary_stats, table1, table2, table3, subgroup_table, all_subgroup_tables, format_subgroup_table, lesion_detection_table, paper_table1, paper_table2, paper_table3, compare_with_paper, to_html, to_latex)
from . import figures
from .figures import (save_figure, largest_lesion_slice, load_overlay_cases, figure3_overlays, figure4_subgroups, timing_figure, lesion_size_figure, SIZE_BINS)
from . import book
from .book import (SUMMARY_DIR, RESULTS_FIRST, STUDY_PART_CAPTION, REMOTE_MIME_PREFIXES, HIDDEN_CELL_TAGS, STAGE_DESCRIPTIONS, publish_table, publish_figure, show_table, show_figure, notebook_reporter, executed_notebooks, prepare_chapter, draw_pipeline_diagram, summary_items, source_line, results_page, provenance_page, remote_assets, strip_thebe, build_book)

__all__ = ['tables', 'figures', 'book', 'METRIC_LABELS', 'SET_LABELS', 'GROUP_LEVELS', 'format_p', 'median_iqr', 'summary_stats', 'table1', 'table2', 'table3', 'subgroup_table', 'all_subgroup_tables', 'format_subgroup_table', 'lesion_detection_table', 'paper_table1', 'paper_table2', 'paper_table3', 'compare_with_paper', 'to_html', 'to_latex', 'save_figure', 'largest_lesion_slice', 'load_overlay_cases', 'figure3_overlays', 'figure4_subgroups', 'timing_figure', 'lesion_size_figure', 'SIZE_BINS', 'SUMMARY_DIR', 'RESULTS_FIRST', 'STUDY_PART_CAPTION', 'REMOTE_MIME_PREFIXES', 'HIDDEN_CELL_TAGS', 'STAGE_DESCRIPTIONS', 'publish_table', 'publish_figure', 'show_table', 'show_figure', 'notebook_reporter', 'executed_notebooks', 'prepare_chapter', 'draw_pipeline_diagram', 'summary_items', 'source_line', 'results_page', 'provenance_page', 'remote_assets', 'strip_thebe', 'build_book']
