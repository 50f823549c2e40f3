"""``--help`` that fits one 80-column screen: one line per option, everyday options first.

Typer's own layout gives option names, negative flags, types and help a column each; with long
option names the help column shrinks to a few characters and every option wraps over many lines.
Here an option is one row of two columns, its names with a short placeholder (``--pool PATH``,
``--label-match/--no-label-match``) and one line of help with its default, grouped in panels by
the option's ``rich_help_panel`` (everyday options in "Options", the rest in "Advanced"). The
long explanations live in ``docs/options.md``.
"""

from __future__ import annotations

import inspect
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

# The widest the help is drawn on a wide terminal: longer lines are harder to read, not easier.
MAX_WIDTH = 100
ARGUMENTS_PANEL = "Arguments"
OPTIONS_PANEL = "Options"  # the everyday options: where an option goes unless it names a panel
ADVANCED = "Advanced"  # the panel (``rich_help_panel=ADVANCED``) of options a first run does not need

# A --flag/--no-flag pair longer than this shows the second name on a line of its own, so that one
# long pair does not narrow the help column of every option in its panel.
MAX_PAIR_WIDTH = 26
# Placeholders for options that name none: short words a scientist reads as "a number", "a file".
# Keys are matched in the type's name (click's "integer", typer's "list[int]", ...) in this order.
_TYPE_PLACEHOLDERS = {"path": "PATH", "float": "NUM", "int": "N", "str": "TEXT", "text": "TEXT"}


def option_names(param: Any) -> str:
    """``-o, --out PATH``, ``--flag``, ``--on/--off`` or ``ARGUMENT``: how the option is typed."""
    if param.param_type_name == "argument":
        return (param.metavar or (param.name or "").upper()) + ("..." if param.nargs == -1 else "")
    names = ", ".join(sorted(param.opts, key=lambda o: (o.startswith("--"), o)))
    if param.secondary_opts:
        pair = names + "/" + ", ".join(param.secondary_opts)
        return pair if len(pair) <= MAX_PAIR_WIDTH else pair.replace("/", "/\n", 1)
    if param.is_flag or param.count:
        return names
    return f"{names} {placeholder(param)}".rstrip()


def usage_name(argument: Any) -> str:
    """``DIR`` for a required argument, ``[DIR]`` for an optional one."""
    return option_names(argument) if argument.required else f"[{option_names(argument)}]"


def placeholder(param: Any) -> str:
    """The option's metavar, else a word for its type: PATH, NUM, N or TEXT."""
    if param.metavar:
        return param.metavar
    # click keeps a type object; typer >= 0.25 describes the annotation instead
    kind = (param.type.name if hasattr(param, "type") else param.bare_type()).lower()
    word = next((w for key, w in _TYPE_PLACEHOLDERS.items() if key in kind), "VALUE")
    return " ".join([word] * param.nargs) if param.nargs > 1 else word


def default_text(param: Any) -> str:
    """The default as the user would type it; empty where there is none to show."""
    if param.param_type_name != "option" or param.show_default is False or param.required:
        return ""
    if isinstance(param.show_default, str):
        return param.show_default
    value = param.default
    if param.is_flag:
        if not param.secondary_opts or value is None:
            return ""  # a lone flag is off unless given
        if param.secondary_opts[-1] == "--no-" + param.opts[-1].removeprefix("--"):
            return "on" if value else "off"
        return (param.opts if value else param.secondary_opts)[-1]
    if value is None or value == () or value == []:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def help_row(param: Any) -> Text:
    """The option's help on one line, then [required] or its default."""
    text = Text(" ".join((getattr(param, "help", None) or "").split()))
    default = default_text(param)
    if param.required:
        text.append(" [required]", style="dim red")
    elif default:
        text.append(f" [default: {default}]", style="dim")
    return text


def panels(command: Any, ctx: Any) -> dict[str, list[Any]]:
    """The command's visible parameters by panel: arguments, everyday options, then the rest."""
    grouped: dict[str, list[Any]] = {ARGUMENTS_PANEL: [], OPTIONS_PANEL: []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        default_panel = ARGUMENTS_PANEL if param.param_type_name == "argument" else OPTIONS_PANEL
        grouped.setdefault(getattr(param, "rich_help_panel", None) or default_panel, []).append(param)
    return {name: params for name, params in grouped.items() if params}


def first_paragraph(text: str | None) -> str:
    """A command's one-line summary: the first paragraph of its docstring, on one line."""
    return " ".join(inspect.cleandoc(text or "").partition("\f")[0].split("\n\n")[0].split())


def render_help(command: Any, ctx: Any, console: Console) -> None:
    """Usage, the docstring, then one panel per group of parameters (and of sub-commands)."""
    console.width = min(console.width, MAX_WIDTH)
    console.print()
    arguments = [usage_name(a) for a in panels(command, ctx).get(ARGUMENTS_PANEL, [])]
    if hasattr(command, "list_commands"):
        arguments.append("COMMAND [ARGS]...")
    usage = " ".join([ctx.command_path, "[OPTIONS]", *arguments])
    console.print(Text(" Usage: ", style="yellow") + Text(usage, style="bold"))
    console.print()
    about = inspect.cleandoc(command.help or "").partition("\f")[0]
    first, *rest = [" ".join(p.split()) for p in about.split("\n\n") if p.strip()] or [""]
    console.print(Padding(Text(first), (0, 1)))
    for paragraph in rest:
        console.print(Padding(Text(paragraph, style="dim"), (0, 1)))
    sections = {
        title: [(option_names(p), help_row(p)) for p in params] for title, params in panels(command, ctx).items()
    }
    if hasattr(command, "list_commands"):
        subcommands = (command.get_command(ctx, name) for name in command.list_commands(ctx))
        sections["Commands"] = [
            (sub.name, Text(sub.short_help or first_paragraph(sub.help)))
            for sub in subcommands
            if sub is not None and not sub.hidden
        ]
    for title, rows in sections.items():
        table = Table.grid(padding=(0, 2), expand=True)
        table.add_column(no_wrap=True, style="bold cyan")
        table.add_column(ratio=1, overflow="fold")
        for names, words in rows:
            table.add_row(names, words)
        console.print(Panel(table, title=title, title_align="left", border_style="dim"))


class OneScreenCommand(TyperCommand):
    """A command whose ``--help`` is one line per option, in panels (see the module docstring)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        render_help(self, ctx, Console(highlight=False))


class OneScreenGroup(TyperGroup):
    """A command group drawn the same way, its commands listed with their one-line summaries."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        render_help(self, ctx, Console(highlight=False))
