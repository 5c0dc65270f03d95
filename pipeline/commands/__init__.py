"""The commands of ``python -m pipeline``: each module holds the parsers and handlers of one
family (``register(commands)`` adds its subcommands, each with ``handler`` set); ``cli`` only
builds the parser from them and dispatches."""
