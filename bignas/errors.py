"""The one base class of the errors bignas reports to users (bad files, bad fields, bad runs)."""


class BignasError(ValueError):
    """Bad input: the message names the file and the field; the CLI prints it and exits 2."""
