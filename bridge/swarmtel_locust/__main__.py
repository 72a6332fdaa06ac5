"""``python -m swarmtel_locust --help``: the bridge's options.

Locust prints ``locust --help`` before it imports the locustfile, so options that plugins add
there never show in it. This prints them with the same parser Locust uses.
"""
import sys

from locust.argument_parser import get_empty_argument_parser

from .options import add_arguments


def main(argv=None) -> None:
    """Print the ``--swarmtel-*`` options (any argument is ignored; help is the only action)."""
    parser = get_empty_argument_parser(add_help=False)
    parser.prog = "locust -f <locustfile that imports swarmtel_locust>"
    parser.description = "Options the swarmtel bridge adds to Locust."
    parser.epilog = None
    add_arguments(parser)
    parser.print_help(sys.stdout)


if __name__ == "__main__":
    main()
