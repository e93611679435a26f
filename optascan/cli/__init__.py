"""The command line: ``optascan COMMAND``; one module per command, each with ``add_parser`` and ``run``."""
