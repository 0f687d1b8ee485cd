"""The ``critpoint`` command line (click). Parses, calls the library, prints."""
