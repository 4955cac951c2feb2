"""What every command line does with a user's mistake: one `error: ...` line on stderr, exit status 2.

A user's mistake is an unknown config field (named, with the nearest existing name), a bad flag or
config value, a missing dataset, checkpoint or file: `UserError` (and the data layer's `DataError`).
Anything else is a programming error and keeps its traceback.

  app.run(main, flags_parser=cli.flags_parser)   # absl CLIs: flag and config-override mistakes
  with cli.user_errors(): ...                    # inside main: UserError / DataError -> one line
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

from lgcd_jax.data.errors import DataError

EXIT_USER_ERROR = 2


class UserError(Exception):
  """A mistake the user can fix; the message says what is wrong and what to do."""


def fail(message: str) -> NoReturn:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  # os._exit, not sys.exit: after a failed orbax restore its background asyncio threads print
  # "Event loop is closed" tracebacks at interpreter shutdown, burying the one line. Nothing is
  # pending on a user error (it is raised before any work is written), so skipping shutdown is safe.
  os._exit(EXIT_USER_ERROR)


_QUIET_HOOK_INSTALLED = False


def _is_closed_loop(kind, value) -> bool:
  return kind is RuntimeError and str(value) == "Event loop is closed"


def _quiet_closed_event_loop(hook):
  """An excepthook that drops "Event loop is closed" from orbax's reader threads.

  When an orbax restore fails (a damaged checkpoint), tensorstore's callbacks still try to post to
  the restore's asyncio loop, which is already closed, and each RuntimeError would be printed as a
  traceback around the one error line. `user_errors` installs this filter for sys.excepthook,
  sys.unraisablehook and threading.excepthook; anything else goes to the previous hook unchanged.
  """
  def excepthook(kind, value, tb):
    if _is_closed_loop(kind, value):
      return
    hook(kind, value, tb)
  return excepthook


@contextlib.contextmanager
def user_errors(*more: type[BaseException]):
  """UserError, DataError (and `more`) end the program with one line and exit status 2."""
  global _QUIET_HOOK_INSTALLED
  if not _QUIET_HOOK_INSTALLED:
    sys.excepthook = _quiet_closed_event_loop(sys.excepthook)
    unraisable = sys.unraisablehook
    sys.unraisablehook = lambda u: (None if _is_closed_loop(u.exc_type, u.exc_value)
                                    else unraisable(u))
    thread_hook = threading.excepthook
    threading.excepthook = lambda a: (None if _is_closed_loop(a.exc_type, a.exc_value)
                                      else thread_hook(a))
    _QUIET_HOOK_INSTALLED = True
  try:
    yield
  except (UserError, DataError, *more) as e:
    fail(str(e))


# --- config files and overrides ------------------------------------------------------------------


def load_config_file(spec: str):
  """The config a `--config=PATH[:ARG]` flag names, as its get_config() returns it (no overrides)."""
  path, _, arg = spec.partition(":")
  if not Path(path).is_file():
    raise UserError(f"config file {path} not found")
  module_spec = importlib.util.spec_from_file_location(f"_lgcd_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def leaf_paths(config, prefix: str = "") -> list[str]:
  """Every dotted field name of a ConfigDict ("model.d", "seed", ...)."""
  out = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    out.append(name)
    if hasattr(value, "items") and not isinstance(value, dict):
      out += leaf_paths(value, name + ".")
  return out


def _override_names(argv: list[str], flag: str) -> list[str]:
  names = []
  for arg in argv[1:]:
    for dashes in ("--", "-"):
      if arg.startswith(f"{dashes}{flag}."):
        names.append(arg[len(dashes) + len(flag) + 1:].split("=", 1)[0])
        break
  return names


def _config_spec(argv: list[str], flag: str) -> str | None:
  for i, arg in enumerate(argv[1:], 1):
    for dashes in ("--", "-"):
      if arg.startswith(f"{dashes}{flag}="):
        return arg.split("=", 1)[1]
      if arg == f"{dashes}{flag}" and i + 1 < len(argv):
        return argv[i + 1]
  return None


def unknown_field_message(argv: list[str], flag: str = "config") -> str | None:
  """'unknown config field X (did you mean Y?)' for the first override naming no field, or None."""
  spec = _config_spec(argv, flag)
  if spec is None:
    return None
  try:
    config = load_config_file(spec)
  except Exception:  # the config file itself is broken: let its own error speak
    return None
  known = leaf_paths(config)
  for name in _override_names(argv, flag):
    if name not in known:
      close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
      hint = f" (did you mean --{flag}.{close[0]}?)" if close else ""
      return f"unknown config field --{flag}.{name} in {spec.partition(':')[0]}{hint}"
  return None


def flags_parser(argv: list[str], config_flag: str = "config") -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=...)`) with a user's mistakes as one line."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --help)")
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    # ml_collections raises these while applying a --config.x.y=v override.
    message = unknown_field_message(argv, config_flag)
    if message is None:
      if not _override_names(argv, config_flag):
        raise
      message = f"bad config override ({type(e).__name__}: {e})"
    fail(message)


def config_value(name: str = "config"):
  """The parsed config flag's value; a config file that does not load is a user's mistake."""
  from absl import flags
  try:
    value = flags.FLAGS[name].value
    value.keys()  # a file that failed to load is a lazy error object until first used
    return value
  except OSError as e:
    path = (getattr(flags.FLAGS[name], "config_filename", None) or "").partition(":")[0]
    if path and not Path(path).is_file():
      fail(f"--{name}={path}: no such config file; give one such as configs/demo.py")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    fail(f"--{name}={path}: the config file does not load ({first})")
