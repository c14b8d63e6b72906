"""The one exception type for bad input.

Every public entry point raises :class:`HeatlabError` with one sentence that names the problem
and the fix; the CLI prints that sentence (no traceback) and exits non-zero. It subclasses
``ValueError`` so library users can catch it the usual way. This module and :mod:`heatlab.files`
sit below every pipeline stage, so any stage may import them.
"""


class HeatlabError(ValueError):
    """Bad input: the message is one sentence naming the problem and the fix."""
