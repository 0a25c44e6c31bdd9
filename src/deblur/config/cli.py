"""``@entry_point("train")``, every tool's ``@hydra.main``: overrides lexed and checked before any
network or file; a :class:`deblur.errors.UserError` is one printed paragraph and exit 1."""

from __future__ import annotations

import functools
import logging
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from deblur.config.checks import check_known_keys, check_overrides, check_values
from deblur.config.compose import CONF_DIR, parse_overrides
from deblur.errors import UserError


class ReportedUserError(CompactHydraException):
    """A UserError on its way out through Hydra, which prints it alone (no traceback)."""


def _to_log_file(err: BaseException) -> None:
    """The traceback of ``err`` into the job's log file(s) only (not the console)."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    record = logging.LogRecord("deblur", logging.ERROR, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


QUOTING_HINT = (
    "Hydra reads `=`, `,`, spaces, brackets, quotes and non-ASCII letters in a value as syntax. "
    "Quote such a value for Hydra inside quotes for the shell, e.g. "
    "ckpt_path=\"'runs/gan/disc=double,loss=ragan/checkpoints/last.ckpt'\" or "
    "data.root=\"'/data/Données'\" (the outer quotes are the shell's, the inner Hydra's)."
)


def _args(argv: list[str]) -> Any:
    try:
        return get_args_parser().parse_args(argv)
    except SystemExit:
        return None  # Hydra reports its own argument errors (and --help)


def check_command_line(argv: list[str]) -> None:
    """Lex the overrides the way Hydra will; one that fails gets the quoting hint."""
    for item in getattr(_args(argv), "overrides", None) or []:
        try:
            parse_overrides([item])
        except OverrideParseException as err:
            detail = str(err).splitlines()[0] if str(err) else "cannot be read"
            raise UserError(
                f"Hydra cannot read the override {item!r} ({detail}). {QUOTING_HINT}"
            ) from None


def _overrides_of(argv: list[str]) -> list[str]:
    """The overrides of a command line; none with another config (its keys are not in conf/)."""
    args = _args(argv)
    other = args is None or args.config_dir or args.config_path or args.config_name
    return [] if other else list(args.overrides or [])


def user_error_cause(err: BaseException) -> UserError | None:
    """The UserError behind ``err`` (Hydra wraps errors of constructors), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback", re.S)


def report(err: UserError) -> str:
    """``err``'s message on one line (of a DataLoader worker's error: the original message)."""
    text = str(err)
    if _WORKER.match(text):
        text = text.rpartition(f"{type(err).__name__}: ")[2]
    return " ".join(text.split())


def _fail(err: UserError) -> NoReturn:
    """``err`` printed as one paragraph (its traceback to the log file); the job ends."""
    _to_log_file(err)
    message = f"[deblur] error: {report(err)}"
    print(message, file=sys.stderr, flush=True)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ReportedUserError(message) from None  # the other jobs go on
    sys.exit(1)


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorator for ``main(cfg)`` of a ``python -m deblur.<tool>`` module (see module doc)."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def guarded(cfg: DictConfig) -> Any:
            try:
                overrides = list(HydraConfig.get().overrides.task)  # inside hydra.main: set
                check_overrides(cfg, config_name, overrides)
                check_values(cfg, overrides)
                return task(cfg)
            except InstantiationException as wrapped:  # how a constructor's UserError arrives
                if (cause := user_error_cause(wrapped)) is None:
                    raise
                _fail(cause)
            except UserError as err:
                _fail(err)

        hydra_main = hydra.main(str(CONF_DIR), config_name, version_base="1.3")(guarded)

        @functools.wraps(task)
        def main() -> Any:
            try:
                check_command_line(sys.argv[1:])
                check_known_keys(config_name, _overrides_of(sys.argv[1:]))
            except UserError as err:
                print(f"[deblur] error: {report(err)}", file=sys.stderr, flush=True)
                sys.exit(2)
            return hydra_main()

        return main

    return decorate
