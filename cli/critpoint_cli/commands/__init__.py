"""The commands of ``critpoint``; each imports the library only when it runs."""
