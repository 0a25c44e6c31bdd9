"""The one wrapper of every command-line entry point: errors a person can fix are one paragraph.

``@entry_point("train")`` replaces ``@hydra.main(config_path=..., config_name="train")``:

* an override Hydra cannot lex (a path with ``=``, ``,``, a space or a non-ASCII letter) is
  reported before Hydra starts, with the quoting that fixes it;
* an override of a key the config does not have is refused with the close match before Hydra
  composes (:func:`deblur.checks.check_known_keys`), and the composed config is checked
  (:func:`deblur.checks.check_overrides`: a value of the wrong type, a key added with ``+`` that
  no code reads; :func:`deblur.checks.check_values`: the ranges of numeric keys and the
  discriminator's switches), all before any network is built or any file written;
* a :class:`deblur.errors.UserError` raised inside the run prints one paragraph on the console,
  without a traceback (the traceback goes to the run's log file and its ``metrics.json``); the
  process exits with status 1. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from deblur.checks import check_known_keys, check_overrides, check_values
from deblur.config import CONF_DIR, register_resolvers
from deblur.errors import UserError

log = logging.getLogger("deblur")


class ReportedUserError(CompactHydraException):
    """A UserError on its way out through Hydra, which prints a CompactHydraException as its
    message alone (no traceback), in a single run and at the end of a multirun alike."""


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


def check_command_line(argv: list[str]) -> None:
    """Lex the overrides the way Hydra will; one that fails gets the quoting hint."""
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return  # let Hydra report its own argument errors (and --help)
    parser = OverridesParser.create()
    for item in args.overrides or []:
        try:
            parser.parse_overrides([item])
        except OverrideParseException as err:
            detail = str(err).splitlines()[0] if str(err) else "cannot be read"
            raise UserError(
                f"Hydra cannot read the override {item!r} ({detail}). {QUOTING_HINT}"
            ) from None


def _overrides_of(argv: list[str]) -> list[str]:
    """The overrides of a command line (Hydra's own flags dropped); none when another config
    folder is given (``--config-dir`` / ``--config-path``: its keys are not in ``conf/``)."""
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return []
    if args.config_dir or args.config_path or args.config_name:
        return []
    return list(args.overrides or [])


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
    """The paragraph printed for ``err`` (its message, on one line). An error raised in a
    DataLoader worker arrives with the worker's traceback in its message: only the original
    message is kept (the traceback still goes to the log file)."""
    text = str(err)
    if _WORKER.match(text):
        marker = f"{type(err).__name__}: "
        text = text[text.rfind(marker) + len(marker) :] if marker in text else text
    return " ".join(text.split())


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorator for ``main(cfg)`` of a ``python -m deblur.<tool>`` module (see module doc)."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        import hydra

        @functools.wraps(task)
        def guarded(cfg: DictConfig) -> Any:
            from hydra.core.hydra_config import HydraConfig

            try:
                overrides = (
                    list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
                )
                if overrides:
                    check_overrides(cfg, config_name, overrides)
                check_values(cfg, overrides)
                try:
                    return task(cfg)
                except InstantiationException as wrapped:
                    # a UserError raised while Hydra builds an object arrives wrapped
                    cause = user_error_cause(wrapped)
                    if cause is None:
                        raise
                    raise cause from None
            except UserError as err:
                _to_log_file(err)
                message = f"[deblur] error: {report(err)}"
                if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                    # the other jobs go on; Hydra prints the message (alone) at the end
                    print(message, file=sys.stderr, flush=True)
                    raise ReportedUserError(message) from None
                print(message, file=sys.stderr, flush=True)
                sys.exit(1)

        hydra_main = hydra.main(
            config_path=str(CONF_DIR), config_name=config_name, version_base="1.3"
        )(guarded)

        @functools.wraps(task)
        def main() -> Any:
            register_resolvers()
            try:
                check_command_line(sys.argv[1:])
                check_known_keys(config_name, _overrides_of(sys.argv[1:]))
            except UserError as err:
                print(f"[deblur] error: {report(err)}", file=sys.stderr, flush=True)
                sys.exit(2)
            return hydra_main()

        main.task = guarded  # type: ignore[attr-defined]  # for tests
        return main

    return decorate
