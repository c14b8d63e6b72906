"""The report's sections, one module per section.

Each module holds one builder ``section(ctx: ReportContext) -> str`` (an HTML fragment) and the
:class:`~heatlab.report.page.Section` that declares it (``SECTION``: id, title, builder and the
inputs it needs). Section modules import the page primitives and the figure modules; nothing of the
report imports a section module except the assembler :mod:`heatlab.report.html` and a section that puts
other sections on a page of its own (:mod:`~heatlab.report.sections.no_truth`).
"""
