"""The `vmkit` command: the kit's machine from a shell, for instructors, CI and
learners who outgrow a widget. One file per subcommand; it sits on top of the
layers (it builds machines with vmkit.lessons) and nothing imports it.

Bad input (an unknown subcommand or flag, a bad machine description, a guest
file that is missing or too big, a replay file from another version or edited
by hand) is one line on stderr naming the problem, and exit status 2.
"""
import argparse
import sys

from . import boot, replay, top, trace
from .description import UsageError
from .machine import MachineFailed

USAGE_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def parser():
    p = Parser(prog="vmkit", description="Run the kit's machine from a shell: a console OS boots, "
               "insmod loads the vmkernel, which displaces it and runs VMs as worlds.",
               epilog="Each subcommand has --help. Virtual time is retired instructions: "
                      "the same machine and inputs give the same trace.")
    p.add_argument("--version", action="version", version=f"vmkit {replay.vmkit_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (boot, top, trace, replay):
        module.add(sub)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        p = parser()
        args = p.parse_args(argv)
        if args.command is None:
            p.print_help(sys.stderr)
            return USAGE_ERROR
        return args.run(args)
    except UsageError as e:
        text = str(e).replace("\n", " ")
        print(text if text.startswith("vmkit") else f"vmkit: {text}", file=sys.stderr)
        return USAGE_ERROR
    except MachineFailed as e:
        print(f"vmkit: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vmkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:               # `vmkit trace | head`
        sys.stderr.close()
        return 0
