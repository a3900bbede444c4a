"""One error type for bad user input: a config, grid, data file, fit table or checkpoint.

The CLI turns a `UserError` into one line on stderr and exit code 2; everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
  """Bad input from the user. `field` names what is wrong (a config key, a column, a file); `fix` says what to do."""

  def __init__(self, field: str, problem: str, fix: str = ""):
    self.field, self.problem, self.fix = field, problem, fix
    super().__init__(f"{field}: {problem}" + (f" ({fix})" if fix else ""))


class ConfigError(UserError):
  """A config value is invalid."""
