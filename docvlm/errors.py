"""The errors a user fixes in their data, not in docvlm: the `docvlm` command prints them as one line
(`docvlm fit: error: <message>`, exit status 2) instead of a traceback."""


class DataError(ValueError):
    """Input data that cannot be used; the message names the file (and line) and what to do."""
