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


def parse_yaml(text: str | bytes, field: str, fix: str = "fix the YAML there", error: type = UserError):
  """yaml.safe_load(text); a syntax error becomes one line naming `field` and where the problem is (line and column,
  or the byte offset of a character that is not text); PyYAML's own message spans several lines."""
  import yaml
  try:
    return yaml.safe_load(text)
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = (f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else
             f" at byte {e.position}" if isinstance(getattr(e, "position", None), int) else "")
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    raise error(field, f"not valid YAML: {problem}{where}", fix) from None
