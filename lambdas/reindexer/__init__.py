"""reindexer: keeps the index of a conda channel on S3 (or in a local folder) up to date."""

__version__ = "0.1.0"
