"""UserError: a mistake the user can fix (a bad option or value, an unknown name, a bad sweep
file, a dataset that is not prepared, a preflight problem). The command line prints it as one
line, naming the fix; every other exception is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(ValueError):
    """A user's mistake; the message says what is wrong and how to fix it."""


class UnknownName(UserError, KeyError):
    """An unknown dataset, method, backbone or extractor name (a KeyError too, for old callers)."""
    __str__ = ValueError.__str__             # KeyError's would quote the message
