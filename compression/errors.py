"""The one exception type for mistakes a user can fix (bad model, bad data, impossible budget).

Its message is one line that names what to change; the CLI prints it and exits non-zero.
"""


class CompressionError(Exception):
    """A user-fixable problem with the compression request."""
