"""The ``ssrl`` command line: thin typer commands over the workflows, with rich output.

Exit codes: 0 done, 1 failure, 2 bad config or arguments, 3 bad input under --strict, 4 store error,
130 interrupted.
"""

from __future__ import annotations

import sys

import typer

from ssrl import __version__
from ssrl.cli import common, data_cmds, eval_cmd, generate_cmd, jobs_cmd, store_cmds, submit_cmd, train_cmd
from ssrl.cli.coldstart_cmd import coldstart

app = typer.Typer(
    name="ssrl",
    help="Spatial-SSRL: turn images into verifiable spatial tasks and train vision-language models on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ssrl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Spatial-SSRL platform."""


app.command("generate")(generate_cmd.generate)
app.command("synth")(data_cmds.synth)
app.command("preview")(data_cmds.preview)
app.command("report")(data_cmds.report)
app.command("verify")(data_cmds.verify)
app.command("tasks")(data_cmds.tasks)
app.command("train")(train_cmd.train)
app.command("sft")(train_cmd.sft)
app.command("coldstart")(coldstart)
app.command("tiny-model")(train_cmd.tiny_model)
app.add_typer(store_cmds.store_app, name="store")
app.add_typer(store_cmds.ckpt_app, name="ckpt")
app.add_typer(store_cmds.model_app, name="model")
app.add_typer(eval_cmd.eval_app, name="eval")
app.add_typer(submit_cmd.submit_app, name="submit")
app.add_typer(jobs_cmd.jobs_app, name="jobs")


def main(argv: list[str] | None = None) -> int:
    """Console entry point; turns the platform's errors into one coloured line and an exit code."""
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code in this mode
    except SystemExit as e:
        return int(e.code or 0)
    except BaseException as e:  # the one place errors become exit codes
        return common.report_error(e)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
