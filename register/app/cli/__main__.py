"""``python -m register.app.cli ...``: the same as the ``register`` command."""

from register.app.cli import main

if __name__ == "__main__":
    main()
