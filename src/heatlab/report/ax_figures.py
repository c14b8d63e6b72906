"""Old import path of the AX figures and section, kept for its callers (tests; ``heatlab ax`` draws through
:func:`heatlab.report.stage_figures`).

The figures and table loading live in :mod:`heatlab.report.co_figures`, the report section in
:mod:`heatlab.report.sections.ax`. Nothing inside :mod:`heatlab.report` imports this module, so
re-exporting both here forms no import circle; new code should import from the modules above.
"""

from heatlab.report.co_figures import (  # noqa: F401
    AX_LABELS, CO_COLUMNS, GAP_COLUMNS, OUTPUT_LABELS, VARIANTS, accuracy_figure, accuracy_frame, auroc_of,
    co_boxplot_figure, co_histogram_figure, load_ax_tables, ordered, variant_label, write_ax_figures,
)
from heatlab.report.sections.ax import accuracy_table_html, auroc_table_html, ax_section, gap_table_html  # noqa: F401
