import functools
import sys


class EvalError(RuntimeError):
    """A problem the user can fix (data, flags, server address); the CLI prints it without a traceback."""


def reports_errors(run):
    """A subcommand's `run(args)` that prints an EvalError as `sglang-glm5 CMD: error: ...` and exits 2."""

    @functools.wraps(run)
    def wrapper(args):
        try:
            return run(args)
        except EvalError as e:
            print(f"sglang-glm5 {' '.join(args.command_path)}: error: {e}", file=sys.stderr)
            return 2

    return wrapper
