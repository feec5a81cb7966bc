"""Training, evaluation, run registry and report subcommands (filled in by the training module)."""


def register(sub) -> None:
    return None
