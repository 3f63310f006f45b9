"""One module per subcommand. Each defines ``add_parser(subparsers)``, which registers the
subcommand and sets ``func`` to its handler ``(args) -> exit status``."""
