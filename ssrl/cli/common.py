"""Console, progress bars and the translation of errors into messages and exit codes."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ssrl.errors import ConfigError, RejectError, SSRLError, StoreError

console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)

EXIT_FAILURE, EXIT_CONFIG, EXIT_INPUT, EXIT_STORE, EXIT_INTERRUPTED = 1, 2, 3, 4, 130

F = TypeVar("F", bound=Callable[..., Any])


def sub_app(help: str) -> typer.Typer:
    """A command group that also runs on its own (tests invoke it directly): same options as the root app."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       context_settings={"help_option_names": ["-h", "--help"]})


def exits_on_error(command: F) -> F:
    """The platform's errors become a message and the exit code, also when a group runs on its own (the root
    ``main`` does the same for everything else)."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SSRLError as e:
            raise typer.Exit(report_error(e)) from None
    return wrapper  # type: ignore[return-value]


#: Optional imports -> the extra that installs them (pyproject.toml), for a one-line hint instead of a trace.
EXTRAS = {m: "train" for m in ("torch", "torchvision", "transformers", "trl", "accelerate", "peft", "datasets",
                                "deepspeed", "tensorboard")} | {"minio": "s3", "kubernetes": "k8s", "kubeflow": "k8s",
                                                                "matplotlib": "eval"}


def _is(e: BaseException, name: str) -> bool:
    """Click's exceptions by name: typer >= 0.29 vendors its own click (``typer._click``), older typer uses
    the ``click`` package; the CLI must not depend on which."""
    return any(c.__name__ == name for c in type(e).__mro__)


def report_error(e: BaseException) -> int:
    if isinstance(e, KeyboardInterrupt):
        console.print("[red]interrupted[/red]: committed shards are kept; rerun the same command to resume")
        return EXIT_INTERRUPTED
    if _is(e, "Abort"):
        return EXIT_INTERRUPTED
    if _is(e, "ClickException"):  # usage errors: unknown option, bad value, missing argument
        e.show()  # type: ignore[attr-defined]
        return EXIT_CONFIG
    if isinstance(e, ConfigError):
        console.print("[bold red]config error[/bold red]:")
        for p in e.problems:
            console.print(f"  - {p}", markup=False)
        return EXIT_CONFIG
    if isinstance(e, RejectError):
        console.print("[bold red]bad input[/bold red] (--strict):", end=" ")
        console.print(str(e), markup=False)
        return EXIT_INPUT
    if isinstance(e, StoreError):
        console.print("[bold red]store error[/bold red]:", end=" ")
        console.print(str(e), markup=False)
        return EXIT_STORE
    if isinstance(e, SSRLError):
        console.print("[bold red]error[/bold red]:", end=" ")
        console.print(str(e), markup=False)
        return EXIT_FAILURE
    if isinstance(e, ModuleNotFoundError) and (extra := EXTRAS.get((e.name or "").split(".")[0])):
        console.print("[bold red]missing dependency[/bold red]:", end=" ")
        console.print(f"{e.name} — this command needs `pip install 'ssrl[{extra}]'`", markup=False)
        return EXIT_FAILURE
    console.print("[bold red]internal error[/bold red]", end=" ")
    console.print(f"({type(e).__name__}): {e}", markup=False)
    console.print("this is a bug in ssrl; please report it with the command you ran", style="dim")
    return EXIT_FAILURE


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """(set_total, advance) callbacks driving one rich progress bar."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=None)
        yield (lambda n: progress.update(task, total=n)), (lambda n: progress.advance(task, n))
