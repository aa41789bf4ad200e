"""Every SQL statement pgqueuer runs lives in this package (queries.py and migrations/)."""
