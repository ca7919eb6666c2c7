"""http-fetch: a KAMI tool that fetches one URL through the daemon.

A tool has no sockets. It asks the daemon with ``kami:tool/http``'s ``fetch``; the
daemon checks the tool's network grants (host, port, scheme, method, and the addresses
the host resolves to), follows redirects itself, and answers with the response or a
typed error naming the rule that refused it. The error arrives as an ``Err`` exception
carrying one of the ``http.Error_*`` cases.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, http

DEFAULT_MAX_CHARS = 20_000
# The WIT error case of each binding class, as the agent sees it: "denied: ...".
_KINDS = {
    http.Error_NotGranted: "not-granted",
    http.Error_Denied: "denied",
    http.Error_LimitExceeded: "limit-exceeded",
    http.Error_InvalidRequest: "invalid-request",
    http.Error_Transport: "transport",
    http.Error_Timeout: "timeout",
}


def _parse(input: str) -> dict:
    try:
        args = json.loads(input)
    except json.JSONDecodeError as exc:
        raise Err(f'input is not valid JSON ({exc}); send {{"url": "https://example.com/"}}') from None
    if not isinstance(args, dict) or not isinstance(args.get("url"), str):
        raise Err('missing "url": give an absolute URL, e.g. {"url": "https://example.com/"}')
    headers = args.get("headers", {})
    if isinstance(headers, dict):
        headers = list(headers.items())
    if not isinstance(headers, list) or not all(
        isinstance(pair, (list, tuple))
        and len(pair) == 2
        and all(isinstance(part, str) for part in pair)
        for pair in headers
    ):
        raise Err('"headers" must map header names to string values, e.g. {"Accept": "text/html"}')
    for key, kind in (("method", str), ("body", str), ("timeout_ms", int), ("max_chars", int)):
        value = args.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise Err(f'"{key}" must be a {kind.__name__} (got {value!r})')
    args["headers"] = [(str(k), str(v)) for k, v in headers]
    return args


class Tool(exports.Tool):
    def run(self, input: str) -> str:
        """Returns ``{"status", "headers", "text", "bytes", "truncated"}``."""
        args = _parse(input)
        body = args.get("body")
        request = http.Request(
            method=args.get("method") or "GET",
            url=args["url"],
            headers=args["headers"],
            body=body.encode("utf-8") if body is not None else None,
            timeout_ms=args.get("timeout_ms"),
        )
        try:
            response = http.fetch(request)
        except Err as exc:
            error = exc.value
            # "denied: <the rule or address check that refused it>", and so on.
            raise Err(f"{_KINDS.get(type(error), 'error')}: {error.value}") from None
        text = response.body.decode("utf-8", "replace")
        max_chars = args.get("max_chars") or DEFAULT_MAX_CHARS
        host.log(host.Level.INFO, f"{request.method} -> {response.status}, {len(response.body)} bytes")
        return json.dumps(
            {
                "status": response.status,
                "headers": [[name, value] for name, value in response.headers],
                "text": text[:max_chars],
                "bytes": len(response.body),
                "truncated": len(text) > max_chars,
            }
        )
