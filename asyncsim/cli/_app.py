"""The one typer application every command module registers on."""

import typer

app = typer.Typer(
    name="asyncsim",
    help="Simulate asynchronous training clusters: staleness traces, stability thresholds, "
    "trace-driven training and wall-clock trade-offs versus S-SGD.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
