"""Bounded network waits for downloads: a probe that resolves and connects to a
download's host (or its proxy) within seconds, and a read timeout for the sockets a
download opens. An offline machine fails within the first, a stalled server within
the second."""

import contextlib
import socket
import threading
import time
import urllib.parse
import urllib.request

# Seconds to resolve a host and connect to it, and to wait for data once connected.
# Read when used, so that a test may lower them.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


class Unreachable(Exception):
    """The network path to a download's host fails; the message says how."""


def _endpoint(url):
    """`(host, port, how)` a request for `url` first connects to: the proxy that
    urllib would use for it, or the URL's own host."""
    parts = urllib.parse.urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname, proxy_parts.port or 80, " (the proxy)"
    return parts.hostname, parts.port or default_port, ""


def _resolve(host, port, timeout):
    """`socket.getaddrinfo` with a deadline (a resolver that never answers would
    otherwise take several times its own timeout)."""
    result = {}

    def lookup():
        try:
            result["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=lookup, daemon=True, name="keras_mlp-resolve")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise Unreachable(f"cannot resolve {host} within {timeout:g} s")
    if "error" in result:
        raise Unreachable(f"cannot resolve {host} ({result['error']})")
    return result["addresses"]


def check_reachable(url, timeout=None):
    """Resolves and connects to the host (or proxy) of `url` within `timeout` seconds
    (default `CONNECT_TIMEOUT`); raises `Unreachable` saying what failed."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    host, port, how = _endpoint(url)
    error = None
    for family, kind, proto, _, address in _resolve(host, port, timeout):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as connection:
                connection.settimeout(left)
                connection.connect(address)
                return
        except OSError as e:
            error = e
    reason = (error.strerror or str(error)) if error else f"timed out after {timeout:g} s"
    raise Unreachable(f"cannot connect to {host}:{port}{how} ({reason})")


@contextlib.contextmanager
def bounded_reads(seconds=None):
    """Sockets opened meanwhile give up after `seconds` (default `READ_TIMEOUT`) without
    progress. This is the process-wide default socket timeout, restored on exit: the
    downloaders (keras' `get_file`, tensorflow-datasets) take no timeout of their own."""
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(READ_TIMEOUT if seconds is None else seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved)
