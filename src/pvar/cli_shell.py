"""The process around the ``pvar`` app: an error is one line on stderr and exit code 2 (a traceback
only with ``--debug``), Python warnings are held back until a command succeeds, library chatter is
off, and SIGTERM unwinds like Ctrl-C."""

from __future__ import annotations

import sys
from typing import Any

from pvar.errors import PvarError

# Deprecations that libraries trigger in their own code, which a pvar user can do nothing about:
# transformers 5 deprecates `is_gradient_checkpointing`, and peft (``PeftModel.__init__``) and TRL
# (``disable_gradient_checkpointing`` around DPOTrainer's reference log-probs) still read it.
LIBRARY_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)


def _quiet_libraries() -> None:
    """Library progress bars and log chatter off (``--debug`` and ``--verbose`` keep them).

    pvar draws one progress display per step itself; transformers' "Loading weights" and "Writing
    model shards" bars, datasets' "Tokenizing train dataset" / "Dropping fully truncated examples"
    maps inside TRL, and hub downloads would print between its lines (and before an error, so the
    one line that names the cause would not be the last). Settings already in the environment
    win, and subprocesses (``accelerate launch``) inherit them. Warnings are not dropped: Python
    warnings are replayed after a success, and errors still print; only `LIBRARY_DEPRECATIONS`
    are not shown.
    """
    import os
    import warnings

    for key, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("DATASETS_VERBOSITY", "error"), ("HF_HUB_VERBOSITY", "error"),
                       ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
                       ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
    for message in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


def _is(exc: BaseException, name: str) -> bool:
    """Click's exception classes by name: typer ships its own copy of click, so the classes differ."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def run_main(app: Any) -> None:
    """Entry point: an error is one line on stderr, the last one, and exit code 2 (``--debug``: raise).

    Python warnings raised while a command runs are held back and shown after it succeeds; a failed
    command shows only its error, so nothing before it is mistaken for the cause.
    """
    import contextlib
    import signal
    import warnings

    # SIGTERM (a scheduler's or `timeout`'s stop) unwinds like Ctrl-C: locks are released and a
    # fresh output that committed nothing is removed; committed shards stay for the resume.
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    debug = "--debug" in sys.argv[1:]
    if not (debug or "--verbose" in sys.argv[1:]):
        _quiet_libraries()
    held: list[str] = []
    shown = warnings.showwarning
    if not debug:
        def hold(message, category, filename, lineno, file=None, line=None) -> None:
            held.append(warnings.formatwarning(message, category, filename, lineno, line))
        warnings.showwarning = hold
    try:
        code = _run_app(app, debug)
    finally:
        warnings.showwarning = shown
    if held:
        sys.stderr.write("".join(held))
    if isinstance(code, int) and code:
        sys.exit(code)


def _run_app(app: Any, debug: bool) -> object:
    """The app, its errors turned into one line and an exit code (``SystemExit``)."""
    try:
        return app(standalone_mode=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except PvarError as exc:
        if debug:
            raise
        _fail(str(exc))
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _fail(f"{where}{exc.strerror or exc}")
    except MemoryError:
        if debug:
            raise
        _fail("out of memory (an input or setting larger than this machine can hold)")
    except Exception as exc:  # a bug, or bad input we failed to name: still one line, never a traceback
        if debug:
            raise
        if _is(exc, "UsageError"):  # no such option, missing argument, a value of the wrong type
            ctx = getattr(exc, "ctx", None)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            _fail(f"{where}{exc.format_message()}{hint}")
        if _is(exc, "Abort"):  # Ctrl-C inside a prompt
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
    return None
