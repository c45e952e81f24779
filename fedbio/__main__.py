"""``python -m fedbio`` is the same as the ``fedbio`` command."""

from fedbio.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
