"""The `cosrec` subcommands: argv in, exit status out, on top of the library.

Each module is one command; `common` holds what they share. No library module (contract,
model, training, service) imports from here.
"""
