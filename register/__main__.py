"""``python -m register``: the command-line interface (same as the ``register`` command)."""

from register.cli import main

if __name__ == "__main__":
    main()
