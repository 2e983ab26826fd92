"""The one exception type users see: a single line saying what is wrong, where, and how to fix it."""


class UserError(Exception):
    """Bad input from the user (config, files, names). The CLI prints it as one line and exits 2."""


class NonFiniteLoss(UserError):
    """Training produced NaN/inf; the last good checkpoint is kept."""
