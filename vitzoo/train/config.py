"""Command-line flags with YAML defaults, the way timm's ``-c/--config`` works, for every engine.

A config file is a mapping of flag names (with underscores) to values; flags given on the command line
win over the file, and the file wins over the parser's defaults. :func:`enable_config_file` prepares a
parser built as usual; :func:`resolve_args` merges the layers after parsing::

    parser = argparse.ArgumentParser()
    add_my_flags(parser)
    enable_config_file(parser)
    args = resolve_args(parser.parse_args(argv))

To know which flags the user typed, every flag's default is replaced by ``argparse.SUPPRESS`` (so
only typed flags appear in the parsed namespace) and the real defaults are kept aside. Config values
are checked against the flags they set: an unknown key, a wrong type or a value outside ``choices``
is an error naming the file and the key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping, Optional

__all__ = ["ConfigError", "enable_config_file", "flag_defaults", "load_config", "parse_with_config", "resolve_args",
           "resume_base_args", "save_args"]

_DEFAULTS_DEST = "_flag_defaults"
_ACTIONS_DEST = "_flag_actions"


class ConfigError(ValueError):
    """A config file that does not fit the command's flags."""


def enable_config_file(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``-c/--config`` and turn the parser's defaults into a separate, lowest layer."""
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help="YAML file of flag defaults (keys are flag names with underscores); "
                             "flags on the command line win")
    defaults, actions = {}, {}
    for action in parser._actions:
        if action.dest in ("help", argparse.SUPPRESS) or isinstance(action, argparse._SubParsersAction):
            continue
        if action.dest not in defaults or action.default is not None:
            defaults[action.dest] = action.default
        actions[action.dest] = action
        action.default = argparse.SUPPRESS
    parser.set_defaults(**{_DEFAULTS_DEST: defaults, _ACTIONS_DEST: actions})
    return parser


def flag_defaults(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The defaults a parser prepared by :func:`enable_config_file` started with."""
    return dict(parser.get_default(_DEFAULTS_DEST))


def _type_error(source: str, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{source}: {key}={value!r} is not a valid value for --{key.replace('_', '-')} "
                       f"(expected {expected})")


def _check_scalar(action: argparse.Action, source: str, key: str, value: Any) -> Any:
    kind = action.type
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(source, key, value, "a number")
        if kind is int and float(value) != int(value):
            raise _type_error(source, key, value, "an integer")
        value = kind(value)
    elif kind in (str, None):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise _type_error(source, key, value, "a string")
    else:
        # a checking type function (vitzoo.commands._types): the file's value passes the same check as a flag
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _type_error(source, key, value, "a number")
        try:
            value = kind(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {key}={value!r} is not a valid value for --{key.replace('_', '-')} "
                              f"({err})") from None
    if action.choices is not None and value not in action.choices:
        raise _type_error(source, key, value, f"one of {list(action.choices)}")
    return value


def _check_value(action: argparse.Action, source: str, key: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise _type_error(source, key, value, "true or false")
        return value
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if isinstance(value, Mapping):
            # key=value flags (timm's ParseKwargs) are written as a mapping in YAML
            return dict(value)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise _type_error(source, key, value, f"a list of {action.nargs} values")
        return [_check_scalar(action, source, key, item) for item in items]
    return _check_scalar(action, source, key, value)


def _read_config(path: str | Path, actions: Mapping[str, argparse.Action]) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping of flag names to values, got {type(data).__name__}")
    return _checked(data, actions, str(path))


def load_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config and check every key against the flags of ``parser`` (prepared with
    :func:`enable_config_file`); returns ``{dest: value}``."""
    return _read_config(path, parser.get_default(_ACTIONS_DEST))


def _checked(data: Mapping[str, Any], actions: Mapping[str, argparse.Action], source: str) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions or dest == "config":
            import difflib

            close = difflib.get_close_matches(dest, list(actions), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        out[dest] = _check_value(actions[dest], source, dest, value)
    return out


def resume_base_args(resume: str | Path) -> dict[str, Any]:
    """The flags saved by the run being resumed (``args.yaml`` beside the checkpoint, else its state file),
    with the run directory set to where the checkpoint is now (the folder may have been moved)."""
    import yaml

    path = Path(resume)
    folder = path if path.is_dir() else path.parent
    saved = folder / "args.yaml"
    if saved.is_file():
        values = yaml.safe_load(saved.read_text()) or {}
    elif path.is_file() or (folder / "last.state.pt").is_file():
        from .checkpoint import Checkpointer

        values = dict(Checkpointer.load(path).get("args") or {})
    else:
        raise FileNotFoundError(f"cannot resume: {path} is neither a run directory (with args.yaml or "
                                f"last.state.pt) nor a .state.pt file")
    return dict(values, output=str(folder.parent), experiment=folder.name)


def resolve_args(args: argparse.Namespace, *, base: Optional[Mapping[str, Any]] = None,
                 base_source: str = "saved run arguments") -> argparse.Namespace:
    """Merge parser defaults < ``base`` < config file < typed flags. Without ``base``, a ``--resume RUN``
    typed on the command line makes the resumed run's saved flags the base (:func:`resume_base_args`).

    Args:
        args: the namespace from a parser prepared with :func:`enable_config_file`.
        base: values to use below the config file; keys that are not flags are ignored.
        base_source: how to name ``base`` in error messages.
    """
    if base is None and getattr(args, "resume", None):
        base = resume_base_args(args.resume)
    typed = {k: v for k, v in vars(args).items() if k not in (_DEFAULTS_DEST, _ACTIONS_DEST)}
    defaults = getattr(args, _DEFAULTS_DEST)
    actions = getattr(args, _ACTIONS_DEST)
    merged = dict(defaults)
    if base:
        merged.update(_checked({k: v for k, v in base.items() if k in actions and k != "config"}, actions, base_source))
    if typed.get("config"):
        merged.update(_read_config(typed["config"], actions))
    merged.update(typed)
    return argparse.Namespace(**merged)


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` with ``parser`` (prepared by :func:`enable_config_file`) and resolve the layers."""
    return resolve_args(parser.parse_args(argv))


def save_args(args: argparse.Namespace, path: str | Path) -> Path:
    """Write the resolved arguments as a YAML config that reproduces the run (``-c args.yaml``)."""
    import yaml

    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(vars(args).items())
              if not k.startswith("_") and k not in ("config", "command")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=True))
    return path
