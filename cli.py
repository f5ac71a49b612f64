"""`colossus-bench`: the one command line, above every part of the project.

Each part keeps its verbs as plain typer-annotated functions beside its code (bench/cli.py,
bench/collectives/cli.py, results/cli.py, reports/model/cli.py, reports/page/cli.py); this module
registers them on one app. Exit codes everywhere: 0 all ok, 1 a case failed its check or crashed
(or an unexpected error), 2 bad input or usage, 130 interrupted.

Conventions every verb keeps: `-h` and `--help`; `--json` is a flag that prints JSON (indent 2)
on stdout; choices (suite, format, backend, collective, dtype) are enums so help lists them and
shells complete them; progress and notes go to stderr.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import threading


def _interrupted_while_loading(_signum, _frame):
    sys.stderr.write("interrupted\n")
    raise SystemExit(130)


# Ctrl-C while the parts load (pyarrow, SQLAlchemy, rich: up to a second) is an interrupted
# start, not a traceback from inside an import; a SIGINT the shell ignores stays ignored
_LOADING = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
if _LOADING:
    signal.signal(signal.SIGINT, _interrupted_while_loading)

import typer  # noqa: E402  (after the handler: the imports are what it covers)
import typer.core  # noqa: E402
from rich.markup import escape  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from bench import cli as bench_cli  # noqa: E402
from bench.collectives import cli as collectives_cli  # noqa: E402
from reports.model import cli as model_cli  # noqa: E402
from reports.page import cli as page_cli  # noqa: E402
from results import cli as results_cli  # noqa: E402
from results import compare as compare_view  # noqa: E402
from results.console import err_console, first_line  # noqa: E402

if _LOADING:
    signal.signal(signal.SIGINT, signal.default_int_handler)

DEBUG_ENV = "COLOSSUS_BENCH_DEBUG"


# click's exceptions, as the typer in use raises them: newer typer vendors click as
# typer._click, older releases use click itself
_exc = (getattr(typer.core, "_click", None) or typer.core.click).exceptions
_NO_ARGS = getattr(_exc, "NoArgsIsHelpError", ())  # `colossus-bench` alone: the help


def takes_text(p) -> bool:
    """A plain text option: typer 0.29 names its type `str` (bare_type); click-based releases
    (the >=0.23 the project allows) carry click's STRING, named `text`, and no bare_type."""
    bare = getattr(p, "bare_type", None)
    if callable(bare):
        return bare() == "str"
    return getattr(getattr(p, "type", None), "name", None) == "text"


def plain_metavars(params) -> list:
    """Help that reads as the command line is typed. typer's rich help (0.2x) prints each
    option's Python type as its metavar: `<bool>` beside a flag, which takes no value (so
    `run --list true` looks right and fails), `<list[str]>` beside a repeatable option, `<str>`
    beside a path or URL. A flag gets no metavar, a repeatable or text option its own name
    (e.g. --collective COLLECTIVE, --db DB), unless the verb set one (run's -k KEY); numbers and
    choices keep theirs (`<int>`, `<full|quick>`), which say what they take."""
    for p in params:
        if isinstance(p, typer.core.TyperOption) and p.metavar is None:
            if p.is_flag:
                p.metavar = ""
            elif p.multiple or takes_text(p):
                p.metavar = p.name.upper()
    return params


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a value not among the choices) as one line on stderr,
    exit 2, instead of click's usage box: every bad input reads the same, whichever layer
    refuses it. Every verb's options get plain metavars (plain_metavars)."""

    def get_params(self, ctx):
        return plain_metavars(super().get_params(ctx))

    def get_command(self, ctx, cmd_name):
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            plain_metavars(cmd.get_params(ctx))  # its own options and its -h/--help
        return cmd

    def invoke(self, ctx):
        # typer turns a Ctrl-C that no verb answered into a silent exit 130; say it, as the
        # verbs that answer it themselves (run, allreduce) do
        if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:  # main() set it
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the verb's from here
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS as e:
            # the error holds the help it was made with; typer's rich help has printed it
            # then already (and holds ""): asking ctx.get_help() again printed it twice
            if e.format_message().strip():
                print(e.format_message())
            code = 2
        except _exc.UsageError as e:
            cmd = e.ctx.command_path if e.ctx else "colossus-bench"
            # typer words a refused enum choice "Value error, 'x' is not one of ...": the
            # prefix says nothing the rest does not
            msg = e.format_message().replace("Value error, ", "")
            err_console.print(f"[bold red]error:[/] {escape(msg)} "
                              f"(see {escape(cmd)} -h)", highlight=False, soft_wrap=True)
            code = 2
        except _exc.ClickException as e:
            err_console.print(f"[bold red]error:[/] {escape(e.format_message())}",
                              highlight=False, soft_wrap=True)
            code = e.exit_code
        except typer.Abort:
            err_console.print("aborted")
            code = 130
        code = code if isinstance(code, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(help="Hardware-aware benchmarks for NVIDIA Hopper GPUs and the clusters "
                       "built from them.", no_args_is_help=True, add_completion=False,
                  cls=OneLineErrors,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  # typer >= 0.23 defaults to False too; said here so no version shows locals
                  pretty_exceptions_show_locals=False)


def version() -> str:
    """The installed package's version (its metadata), else that of an uninstalled checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("colossus-bench")
    except PackageNotFoundError:
        return "0+unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"colossus-bench {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_print_version,
                                      is_eager=True, help="print the version and exit"),
) -> None:
    """Hardware-aware benchmarks for NVIDIA Hopper GPUs and the clusters built from them."""


def help_of(verb) -> str:
    """A verb's docstring with each paragraph on one line: typer's rich help keeps a docstring's
    line breaks, which broke `-h` sentences at the source's 100 columns."""
    paragraphs = inspect.cleandoc(verb.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


VERBS = {"run": bench_cli.run, "info": bench_cli.info, "export": results_cli.export,
         "ingest": results_cli.ingest, "upload": results_cli.upload,
         "fleet": results_cli.fleet, "compare": compare_view.compare_verb,
         "allreduce": collectives_cli.allreduce, "estimate": model_cli.estimate,
         "validate": model_cli.validate, "report": page_cli.report}
for _name, _verb in VERBS.items():
    app.command(_name, help=help_of(_verb))(_verb)


def main() -> None:
    """The console script: no traceback reaches a user unless COLOSSUS_BENCH_DEBUG is set."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if _LOADING:  # until a verb starts (typer's own lazy imports, parsing): as while loading
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug or an environment we did not foresee: one line, exit 1
        if os.environ.get(DEBUG_ENV):
            raise
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {first_line(e)} (run with "
                          f"{DEBUG_ENV}=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
