"""How the tools hold SIGINT and SIGTERM for a while: one context manager."""

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def handled(handler):
    """SIGINT and SIGTERM go to `handler` (a function or `signal.SIG_IGN`) inside the
    block, and back to their previous handlers after it. Only the main thread may
    handle signals: elsewhere the block runs with the handlers as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
