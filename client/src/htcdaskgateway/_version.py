# Written by scripts/version.sh from pins/versions.env: edit it there.
__version__ = "2026.12.0"
