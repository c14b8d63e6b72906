"""What every ``heatlab`` command shares: the consoles, printing, errors and progress bars.

The command modules (:mod:`heatlab.cli` and ``heatlab.cli_*``) import this module; it imports none
of them, so the CLI has no import circle.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text
from typer._click import exceptions as _parse  # Typer vendors click: its parse errors are these, not click's
from typer.core import TyperGroup

from heatlab.errors import HeatlabError

if TYPE_CHECKING:
    from heatlab.run.results import AxResult, EvaluateResult, ExplainResult

console = Console(stderr=True)
out = Console()

#: ``--methods`` help of the stages (kept literal so ``--help`` does not import torch; a test
#: checks it names every opt-in method of heatlab.explain.methods).
METHODS_HELP = ("'all' (the papers' eleven methods) or comma-separated method names; opt-in, run only when named: "
                "NoiseTunnel, Occlusion, FeatureAblation, KernelShap, Lime, Random (the control), SmoothGrad, SmoothGradSq, VarGrad "
                "(or e.g. SmoothGrad-IntegratedGradients).")


def say_cam_layer(summary: EvaluateResult | AxResult | ExplainResult) -> None:
    """One line naming the layer the CAM methods used and how it was chosen, when the stage ran one."""
    if summary.cam_layer:
        rule = summary.cam_layer_rule or "the model's first nn.Conv2d"
        say(f"CAM layer: {summary.cam_layer} ({rule.replace('chosen by name', 'chosen with --layer')}; "
            "LayerGradCam and GuidedGradCam use it)")


def layer_option():
    """``--layer``, the CAM methods' layer, for every command that runs attribution methods."""
    return typer.Option(None, "--layer", help="Layer of LayerGradCam and GuidedGradCam, a module name such as "
                        "layer4.1.conv2 (default: the first convolution under the paper presets, else the last).")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _shown(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name (surrogateescape): the byte itself
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def visible(text: object) -> object:
    r"""``text`` with terminal control characters shown as ``\xNN`` (a file name holding an escape
    sequence must not recolour or rewrite the terminal) and the undecodable bytes of a non-UTF-8
    file name as ``\xNN`` too (they cannot be printed as they are); other objects (rich tables) as they are."""
    if not isinstance(text, str):
        return text
    return _CONTROL.sub(lambda m: _shown(m.group()), text)


def say(message: object) -> None:
    """Print one line of user-facing text on stdout literally: no rich markup, no highlighting,
    no wrapping (so a path such as ``D[test]`` appears exactly as given and can be copied)."""
    out.print(visible(message), markup=False, highlight=False, soft_wrap=True)


def say_figures(folder: Path, stage: str) -> list[Path]:
    """Draw ``stage``'s figures as the report does (:func:`heatlab.report.stage_figures`) and print
    one ``figure: PATH`` line each; returns the paths."""
    from heatlab.report import stage_figures

    figures = stage_figures(folder, stage)
    for path in figures:
        say(f"figure: {path}")
    return figures


def trust_model_code_option():
    """``--trust-model-code``, the one consent flag of every command that rebuilds a model from a run
    folder's model.json or a weights file's metadata (which may name code: file.py:fn, module:fn)."""
    return typer.Option(False, "--trust-model-code",
                        help="Rebuild a model whose run folder or weights file names Python code (path/file.py:fn, "
                             "package.module:fn, an entry point); that code runs, so only for code you trust.")


# ------------------------------------------------------------------ where a stage's units run
BACKEND_HELP = {
    # the backslash keeps Rich (which renders the help) from taking [ray] for a style tag and dropping it
    "backend": "Where the work units run: local (this process) or ray (a Ray cluster; pip install 'heatlab\\[ray]').",
    "address": "Ray only: the cluster to join (host:port or auto); default a local Ray instance.",
    "workers": "Ray only: worker actors (default one per CPU the cluster offers).",
    "gpus_per_worker": "Ray only: GPUs reserved per worker (use with --device cuda).",
}


def backend_options(backend: str, address: str | None, workers: int | None, gpus_per_worker: float | None):
    """The backend the flags ask for (:func:`heatlab.run.runner.make_backend`)."""
    from heatlab.run.runner import make_backend

    options = {"note": say} if backend == "ray" else {}  # says where a local instance keeps its files
    return make_backend(backend, address=address, workers=workers, gpus_per_worker=gpus_per_worker, **options)


#: The four backend flags, defined once: (parameter, type, Typer option).
BACKEND_FLAGS = (
    ("backend", str, typer.Option("local", "--backend", help=BACKEND_HELP["backend"])),
    ("address", Optional[str], typer.Option(None, "--address", help=BACKEND_HELP["address"])),
    ("workers", Optional[int], typer.Option(None, "--workers", help=BACKEND_HELP["workers"])),
    ("gpus_per_worker", Optional[float], typer.Option(None, "--gpus-per-worker", help=BACKEND_HELP["gpus_per_worker"])),
)


def backend_flags(fn: Callable) -> Callable:
    """Give command ``fn`` the flags of :data:`BACKEND_FLAGS` and call it with ``runner=`` the backend they
    ask for, inside its session (a local Ray instance starts at most once per command). ``fn`` declares
    a parameter ``runner`` where the flags would go; put this under ``@guarded``, so a bad ``workers=0``
    of the library reads ``--workers 0``."""
    signature = inspect.signature(fn)
    kept = [p for name, p in signature.parameters.items() if name != "runner"]
    flags = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, kind, option in BACKEND_FLAGS]

    @functools.wraps(fn)
    def command(*args, backend="local", address=None, workers=None, gpus_per_worker=None, **kwargs):
        from heatlab.run.runner import backend_session

        runner = backend_options(backend, address, workers, gpus_per_worker)
        with backend_session(runner):  # one local Ray, if any, for all the stages of the command
            return fn(*args, runner=runner, **kwargs)

    command.__signature__ = signature.replace(parameters=[*kept, *flags])
    command.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "runner"},
                               **{name: kind for name, kind, _ in BACKEND_FLAGS}}
    return command


def backend_line(backend) -> str | None:
    """One line about a Ray run (units, retries, replaced workers, time per unit); None for local."""
    s = backend.summary()
    if s.get("backend") != "ray" or not s.get("units"):
        return None
    per = f"{s['seconds_per_unit']:.2f} s per unit" if s.get("seconds_per_unit") is not None else ""
    n = lambda k, word: f"{k} {word}{'' if k == 1 else 's'}"  # noqa: E731
    return (f"ray: {n(s['units'], 'unit')} on {n(s['workers'], 'worker')}, {s['retried']} retried, "
            f"{n(s['workers_replaced'], 'worker')} replaced, {per}")


def warn(message: str) -> None:
    """Print ``warning: <message>`` on stderr (literally): the work is done but its result needs a look."""
    console.print(Text.assemble(("warning:", "bold yellow"), " ", visible(str(message))), highlight=False, soft_wrap=True)


def warn_random_weights(random_weights: bool, name: str) -> None:
    """The one random-weights warning line when the stage explained or scored model ``name`` with random
    weights (its result's ``random_weights``; :func:`heatlab.run.rundir.random_weights_warning`)."""
    if random_weights:
        from heatlab.run.rundir import random_weights_warning

        warn(random_weights_warning(name))


def _fail(message: str, code: int = 2) -> None:
    """Print ``error: <message>`` on stderr (the message literally) and exit with ``code``."""
    console.print(Text.assemble(("error:", "bold red"), " ", visible(str(message))), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------------- library words -> flags
_VALUE = r"""'[^']*'|"[^"]*"|\.\.\.|[^\s,;()\[\]{}]*[^\s,;()\[\]{}.]"""


def _flags(fn: Callable) -> dict[str, tuple[str, bool]]:
    """``{parameter name: (long flag, is a bool flag)}`` for the options of a Typer command function."""
    flags: dict[str, tuple[str, bool]] = {}
    for name, param in inspect.signature(fn).parameters.items():
        default = param.default
        if isinstance(default, typer.models.ArgumentInfo):
            continue  # positional: there is no flag to name
        decls = list(getattr(default, "param_decls", None) or ()) if isinstance(default, typer.models.OptionInfo) else []
        longs = [d.split("/")[0] for d in decls if d.startswith("--")]
        flag = longs[0] if longs else "--" + name.replace("_", "-")
        value = default.default if isinstance(default, typer.models.OptionInfo) else default
        flags[name] = (flag, isinstance(value, bool) or param.annotation in (bool, "bool"))
    return flags


def flag_words(message: str, flags: dict[str, tuple[str, bool]]) -> str:
    """Rewrite every ``name=value`` of ``message`` whose ``name`` is one of the command's options as
    ``--flag value`` (``batch_size=25`` -> ``--batch-size 25``, ``device='cpu'`` -> ``--device cpu``).
    Library errors speak Python; the CLI speaks flags. Other text is left alone."""
    if not flags:
        return message
    names = "|".join(sorted((re.escape(n) for n in flags), key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.\-])({names})=(?!=)({_VALUE})")

    def swap(match: re.Match) -> str:
        flag, is_bool = flags[match.group(1)]
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
            value = shlex.quote(value) if value else "''"
        if is_bool:
            if value == "True":
                return flag
            return match.group(0)  # False or anything else: no single flag says it
        return f"{flag} {value}"

    message = pattern.sub(swap, message)
    # A sentence that starts with a Python argument name ("first_n_correct must be ...") names the flag.
    lead = re.match(rf"({names}) ", message)
    if lead and lead.group(1)[0].islower():
        message = flags[lead.group(1)][0] + message[lead.end() - 1:]
    return message


def guarded(fn):
    """Turn HeatlabError (and Ctrl-C) into one sentence on stderr and a non-zero exit, no traceback.

    The sentence names the command's own flags: ``name=value`` of a library message becomes
    ``--name value`` when ``name`` is an option of this command (see :func:`flag_words`).
    """
    flags = _flags(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HeatlabError as exc:
            _fail(flag_words(str(exc), flags))
        except KeyboardInterrupt:
            _fail("interrupted; run the same command again to resume where it stopped.", code=130)

    return wrapper


# ------------------------------------------------------------------------------ parse errors
_KINDS = {"int_parsing": ("a whole number", "1"), "float_parsing": ("a number", "0.5"),
          "bool_parsing": ("true or false", "true")}


def _flag_of(param) -> str:
    """``--out`` for an option, ``SOURCES`` for an argument."""
    longs = [o for o in getattr(param, "opts", None) or () if o.startswith("--")]
    return max(longs, key=len) if longs else str(param.name).upper()


def parse_error_sentence(exc: Exception) -> str:
    """One sentence for a parse error of the command line (a wrong value, an unknown option, a
    missing argument), naming the flag and the fix, as every other heatlab error does."""
    ctx = getattr(exc, "ctx", None)
    where = f"`{ctx.command_path} --help`" if ctx is not None else "`heatlab --help`"
    param = getattr(exc, "param", None)
    if isinstance(exc, _parse.MissingParameter) and param is not None:
        kind = "argument" if getattr(param, "param_type_name", "") == "argument" else "option"
        return f"Missing {kind} {_flag_of(param)}; pass it (see {where})."
    if isinstance(exc, _parse.BadParameter) and param is not None:
        flag = _flag_of(param)
        errors = getattr(exc.__cause__, "errors", None)
        error = errors()[0] if callable(errors) and errors() else {}
        if error.get("type") in _KINDS and "input" in error:
            what, fallback = _KINDS[error["type"]]
            default = getattr(param, "default", None)
            example = default if isinstance(default, (int, float)) and not isinstance(default, bool) else fallback
            return f"{flag} expects {what}, got {error['input']!r}; pass e.g. {flag} {example}."
        return f"{flag}: {exc.message.rstrip('.')}; see {where}."
    if isinstance(exc, _parse.NoSuchOption):
        near = sorted(exc.possibilities or ())
        hint = f"did you mean {' or '.join(near)}? See {where}" if near else f"see {where} for its options"
        return f"No such option {exc.option_name}; {hint}."
    if isinstance(exc, _parse.BadOptionUsage) and str(exc.option_name).startswith("-") and "requires" in exc.message:
        return f"{exc.option_name} needs a value after it; see {where}."
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return f"{message.strip().rstrip('.')}; see {where}."


class HeatlabGroup(TyperGroup):
    """The ``heatlab`` command group: parse errors print one ``error:`` sentence (exit 2) instead
    of Typer's usage box; ``--help``, a bare command (its help) and normal exits work as before."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _parse.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except _parse.UsageError as exc:
            console.print(Text.assemble(("error:", "bold red"), " ", visible(parse_error_sentence(exc))),
                          highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except _parse.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            console.print("Aborted!", highlight=False)
            sys.exit(1)
        # Without standalone mode Typer returns an Exit's code, or the command's return value (None).
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """Yield a ``progress(task, done, total)`` callable backed by rich progress bars with an ETA.

    The finished bars stay on screen; when the block raises (bad input, Ctrl-C) they are erased
    first, so the error sentence that follows is all that remains of the stage."""
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and "pytest" in sys.modules,
    )
    ids: dict[str, int] = {}

    def update(task: str, done: int, total: int) -> None:
        if task not in ids:
            ids[task] = bars.add_task(task, total=total)
        bars.update(ids[task], completed=done, total=total)

    bars.start()
    try:
        yield update
    except BaseException:
        bars.live.transient = True  # an error clears the partial bars, so its sentence is the last thing shown
        raise
    finally:
        bars.stop()
