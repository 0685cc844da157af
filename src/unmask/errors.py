"""The one error type users see: the CLI prints its message on one line and exits with code 2."""


class UnmaskError(Exception):
    """A bad input (config, override, checkpoint, data) described in one sentence."""
