"""Old import path of the GAX figure, viewer and section, kept for its callers (``heatlab gax``, tests).

The CO-against-step figure, the slider viewer page (images) and the results page (tables) live in
:mod:`heatlab.report.gax_pages`, the report section in :mod:`heatlab.report.sections.gax`. Nothing
inside :mod:`heatlab.report` imports this module, so re-exporting both here forms no import circle;
new code should import from the modules above.
"""

from heatlab.report.gax_pages import MAX_FRAMES, PANEL_PX, build_gax_viewer, gax_feature_figure, gax_figure  # noqa: F401
from heatlab.report.sections.gax import gax_section  # noqa: F401
