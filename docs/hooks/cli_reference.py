"""MkDocs hook: render `heatlab --help` of every command into docs/cli.md at build time.

The page holds the marker ``<!-- heatlab-cli-reference -->``; this hook replaces it with one section
per command (walking the Typer app's click groups), each holding that command's plain help text, so
the reference is always what the installed ``heatlab`` prints and is never copied by hand.
"""

from __future__ import annotations

MARKER = "<!-- heatlab-cli-reference -->"
WIDTH = 100


def _plain_help(command, ctx) -> str:
    command.rich_markup_mode = None  # Typer's plain click formatter: no boxes, no colour codes
    return command.get_help(ctx).rstrip().replace("\\[", "[")  # Rich's escape of a literal [ (e.g. heatlab[ray])


def _sections(command, ctx, path: list[str]) -> list[str]:
    title = " ".join(path)
    out = [f"## `{title}`\n\n```text\n{_plain_help(command, ctx)}\n```\n"]
    if hasattr(command, "list_commands"):  # a group: document its subcommands after it
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            sub_ctx = type(ctx)(sub, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH)
            out += _sections(sub, sub_ctx, path + [name])
    return out


def cli_reference() -> str:
    """Markdown for every command of the ``heatlab`` Typer app, in the order ``heatlab --help`` lists them."""
    import typer.main

    from heatlab.cli import app

    root = typer.main.get_command(app)
    ctx_class = type(root.make_context("heatlab", ["--help"], resilient_parsing=True))
    ctx = ctx_class(root, info_name="heatlab", terminal_width=WIDTH, max_content_width=WIDTH)
    return "\n".join(_sections(root, ctx, ["heatlab"]))


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
