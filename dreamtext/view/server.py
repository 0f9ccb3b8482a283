"""``dreamtext view``'s HTTP server: the two pages, their data, and the runs' files, read-only.

    GET /                        the gallery
    GET /run/<id>/               one run's page (404, a page that says the run is gone, once it is
                                 not there)
    GET /api/runs.json           the gallery's data; ``?since=<cursor>`` (the page polls so):
                                 only the runs that changed since the answer that gave it
    GET /api/run/<id>.json       one run's data (polled); ``?since=<cursor>`` (the page polls
                                 so): its small fields, and of its curves, previews and config
                                 only what changed since; 404 ``{"gone": "<id>"}`` once the run
                                 is not there (its folder removed or moved)
    GET /static/<name>           the pages' script, style and three.js (package files, by name)
    GET /files/<id>/<path>       a file in that run's workspace
    GET /download/<id>/<name>.zip  that run's mesh files in one zip, made as it is asked for
                                 (``downloads.write_zip``), named ``<id>.zip`` whatever
                                 ``<name>``; 404 for a run without mesh files

Anything else is 404, and so is any file request that leaves the workspace: ``..``, an absolute or
empty segment, an encoded slash or dot (``%2f``, ``%2e%2e``, double encodings), a percent-encoding
that is not UTF-8 (``%ff``, the overlong ``%c0%ae``), a hidden name, a symlink that resolves
outside, or a kind of file the pages never show (checkpoints, say), asked for or linked to.
Requests whose ``Host`` is not a name of this server are refused (403, with the line that says
what to pass), so that a web page elsewhere cannot read the runs through a DNS name that points at
127.0.0.1 or at a port forward to this server (``--host 0.0.0.0`` too); a reverse proxy that
passes the browser's ``Host`` on is answered once its name is given (``--allow-host NAME``;
``ViewServer.host_allowed`` says why no name is answered without it).

The two ``api`` answers carry an ``ETag`` (a digest of their text; for an answer to a cursor,
that of the whole gallery or run it makes of what the page has); a poll that sends it back in
``If-None-Match`` while the answer is the same gets ``304 Not Modified`` and no body. A gallery
poll whose cursor this server gave out gets the cards that changed since (and the ids of the
runs that went, and the places of those that came) instead of every card; any other cursor,
the whole gallery
(``page.GalleryText``). A run page's poll likewise gets only the log records and previews after
those its cursor names (``page.RunText``). Pages and ``api`` answers go gzipped to clients that
take it (JSON of many runs shrinks ~25 times).

Every address in the pages is relative, so a proxy can serve them under a path of its own.

A server given a token (``dreamtext view`` gives the user's, kept between starts by
``viewers.viewer_token``, unless ``--no-token``; see ``ViewServer.token_given``) answers only
requests that carry it: in the query of the address it prints (``?token=...``), which sets a
cookie that the page's other requests carry, or in that cookie. Others (another user of a
shared machine at 127.0.0.1:PORT) get a 403 that says to open the printed address.

No request prints a traceback: a bug met while answering one is a 500 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import hmac
import ipaddress
import mimetypes
import re
import socket
import socketserver
import sys
import tempfile
from collections.abc import Callable, Collection
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from dreamtext.errors import DreamtextError, print_note, shown_path, terminal_lines
from dreamtext.view.downloads import write_zip, zip_members, zip_name
from dreamtext.view.page import (
    ASSETS,
    SLASH_SCRIPT_HASH,
    GalleryText,
    RunText,
    asset_bytes,
    gone_page_json,
    json_etag,
    page_base,
    render_page,
    script_json,
    server_links,
)
from dreamtext.view.viewers import (
    forget_viewer,
    record_heartbeat,
    record_viewer,
    viewer_token,
)
from dreamtext.view.workspaces import (
    Catalog,
    GalleryCache,
    Run,
    RunLocation,
    folder_hints,
    hidden_inside,
    is_linked_file,
    left_out_hints,
    read_run,
)

# The kinds of workspace file the pages link to; nothing else is served.
SERVED_SUFFIXES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".glb": "model/gltf-binary",
    ".obj": "text/plain; charset=utf-8",
    ".mtl": "text/plain; charset=utf-8",
    ".ply": "application/octet-stream",
    ".json": "application/json; charset=utf-8",
    ".jsonl": "text/plain; charset=utf-8",
}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
ALL_INTERFACES = {"0.0.0.0", "::", ""}
# Whether the bind may share a port another server listens on: on macOS and the BSDs the
# SO_REUSEADDR that HTTPServer sets lets 127.0.0.1:PORT be bound while 0.0.0.0:PORT listens (and
# the reverse; the more specific socket takes its address's connections); Linux refuses it.
SHARED_PORT_BINDS = not sys.platform.startswith("linux")
# What the pages may load: their own scripts, styles and data, and the blob: images GLTFLoader
# makes of a GLB's embedded texture, and the gallery's one inline script (page.SLASH_SCRIPT).
# base-uri 'self': a page's <base href> is this server's root.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self'; "
    f"connect-src 'self' blob: data:; script-src 'self' {SLASH_SCRIPT_HASH}; style-src 'self'; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
# Pages and data at least this long go gzipped to clients that take it.
COMPRESS_FROM_BYTES = 2048
# A DNS name as a Host header holds one (lowercased): letters, digits, '-', '.' (and the '_' some
# clusters' node names have), up to 253.
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,252})")
# A request without the server's token gets this (the token is what --no-token turns off).
NO_TOKEN = (
    "this viewer answers the address it printed as it started, with its ?token=: open that "
    "address (once: a cookie keeps it), or start dreamtext view with --no-token"
)
# Where a run page's ?token= sends the browser back to (?next=), once the root set the cookie:
# a run page as its address names it (percent-encoded), nothing else (no other site, no header).
_RUN_PAGE = re.compile(r"run/[A-Za-z0-9._~%!$&'()*+,;=:@-]+/")
# Longer numbers than any file's size are not a range (int() refuses over 4300 digits).
_RANGE = re.compile(r"bytes=(\d{0,20})-(\d{0,20})")


def workspace_file(workspace: Path, raw_path: str) -> Path | None:
    """The file that ``raw_path`` (the still percent-encoded part of the address after
    ``/files/<id>/``) names inside ``workspace``, or ``None`` when it names anything else."""
    segments = []
    for raw in raw_path.split("/"):
        try:
            segment = unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:  # %ff, or an overlong %c0%ae standing for "."
            return None
        if (
            segment in ("", ".", "..")
            or segment.startswith(".")
            or any(c in segment for c in "/\\%\x00")
        ):
            return None
        segments.append(segment)
    path = workspace.joinpath(*segments)
    if path.suffix.lower() not in SERVED_SUFFIXES:
        return None
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(workspace) or not resolved.is_file():
        return None
    # A link inside the workspace leads to a file that is checked as a name asked for is: a
    # preview linking to checkpoints/last.pt or .export-progress.json is not served.
    if resolved.suffix.lower() not in SERVED_SUFFIXES or hidden_inside(workspace, resolved):
        return None
    return resolved


def _is_address(name: str) -> bool:
    """Whether a ``Host`` name is an IP address (``10.1.2.3``, ``fe80::1``), not a DNS name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def resolver_domains(path: str = "/etc/resolv.conf") -> set[str]:
    """The domains of the resolver's ``search`` and ``domain`` lines in ``path`` (lowercase,
    without a trailing dot): the names a cluster gives its nodes' short names; none where the
    file cannot be read."""
    domains: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                words = line.split()
                if words and words[0] in ("search", "domain"):
                    domains.update(w.lower().rstrip(".") for w in words[1:] if w.strip("."))
    except OSError:
        pass
    return domains


def allowed_host_name(value: str) -> str:
    """``--allow-host``'s ``value`` as :meth:`ViewServer.host_allowed` compares it: a host name or
    an IP address, lowercase, without brackets; ``DreamtextError`` for anything else (an
    address with ``http://`` or a path, a port: the name is answered on every port)."""
    text = value.strip().lower()
    if _is_address(text.removeprefix("[").removesuffix("]")):
        return text.removeprefix("[").removesuffix("]")
    parsed = _host_and_port(text) if "/" not in text else None
    if parsed is not None and parsed[1] is not None and _HOST_NAME.fullmatch(parsed[0]):
        raise DreamtextError(
            f"--allow-host takes the name without its port: --allow-host {parsed[0]} (it is "
            "answered on any port)"
        )
    if parsed is None or not _HOST_NAME.fullmatch(parsed[0]):
        raise DreamtextError(
            f"--allow-host takes a host name as the browser's address shows it (hub.example.edu), "
            f"not {value!r}"
        )
    return parsed[0]


def _host_and_port(host_header: str) -> tuple[str, int | None] | None:
    """``Host`` as (name, port or None): ``localhost:8000`` → (``localhost``, 8000),
    ``[::1]`` → (``::1``, None); ``None`` for what no browser sends (``::1`` unbracketed, a
    port that is not a number)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:] if port else None
    elif host.count(":") > 1:
        return None
    else:
        name, _, port = host.partition(":")
        port = port if ":" in host else None
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    return name, None if port is None else int(port)


class ViewServer(ThreadingHTTPServer):
    """A threading HTTP server over one ``Catalog``; its handler threads never block exit."""

    daemon_threads = True
    # SO_REUSEPORT would let a second server bind a port in use; it must fail instead.
    allow_reuse_port = False

    def __init__(
        self,
        address: tuple[str, int],
        catalog: Catalog,
        poll_ms: int = 2000,
        log: TextIO | None = None,
        allowed_hosts: Collection[str] = (),
        token: str | None = None,
    ):
        self.catalog = catalog
        # What a request must carry (token_given); None: nothing.
        self.token = token
        # Each open gallery asks for every run every poll_ms; a run is read again only when its
        # files change.
        self.gallery = GalleryCache()
        self.gallery_text = GalleryText()
        self.run_text = RunText()
        self.poll_ms = poll_ms
        self._log = log
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, ViewHandler)
        # The address bound counts as the name typed: `--host $(hostname)` prints the URL of the
        # address the name resolves to, and `--host 0` is every interface.
        bound = str(self.server_address[0])
        self.everywhere = host in ALL_INTERFACES or bound in ALL_INTERFACES
        # The names of the proxies the user gave (--allow-host), checked by allowed_host_name.
        self.proxy_hosts = frozenset(allowed_host_name(name) for name in allowed_hosts)
        self.allowed_hosts = LOCAL_HOSTS | {host.lower(), bound.lower()} | self.proxy_hosts
        # On every interface, other machines name this one as they know it: by its host name
        # (node042, or node042.cluster.example) or an address.
        self.machine, _, domain = socket.gethostname().lower().partition(".")
        # The domains this machine's name is given with (node042.cluster.example), read without
        # DNS (a lookup can hang offline); socket.getfqdn's only where a name asks (_own_domain).
        self.domains = resolver_domains() | ({domain} if domain else set())
        self._fqdn_domain: str | None = None
        # Called between requests (service_actions): the record's heartbeat, once it has one.
        self.heartbeat: Callable[[], None] | None = None

    def service_actions(self) -> None:
        """``serve_forever``'s call at each turn of its loop (every ``poll_interval``): the
        heartbeat of the viewer's record (``viewers.record_heartbeat``), which touches it every
        ``viewers.BEAT_S``: no thread is needed for it."""
        super().service_actions()
        if self.heartbeat is not None:
            self.heartbeat()

    def host_allowed(self, host_header: str) -> bool:
        """Whether to answer a request with this ``Host``.

        What the check stops is DNS rebinding: a web page elsewhere points a name of its own at
        this machine, and the browser, taking this server for the page's own, lets the page read
        the runs. Such a request names the page's host and the port the browser connected to:
        this server's, or that of a port forward to it (``ssh -L 9000:127.0.0.1:8000``), and no
        port where that is 80, which any user may listen on where Windows runs the browser (and,
        as reported, macOS from 10.14 on): ``ssh -L 80:127.0.0.1:8000`` there, and a page whose
        name pointed at 127.0.0.1, read the runs while a name without a port was taken for a
        reverse proxy's. Hence: the loopback names and the address this server was bound to,
        with any port, and the names given with ``--allow-host`` (a proxy that passes the
        browser's ``Host`` on: jupyter-server-proxy, Open OnDemand with ProxyPreserveHost); a
        proxy that sends this server's own address (Apache's default) counts as local.

        On every interface (``--host 0.0.0.0``) this machine's host name, alone or with one of
        its own domains (:meth:`_own_domain`), and any IP address count as local too: another
        machine (Open OnDemand's proxy too) names this one so. An address is no DNS name a page
        elsewhere could point here. Any name answered there, a page whose DNS name pointed at
        the user's end of an ssh forward (``-L 8000:node042:8000``) read the runs.
        """
        parsed = _host_and_port(host_header)
        if parsed is None:
            return False
        name, _ = parsed
        if name in self.allowed_hosts:
            return True
        return self.everywhere and (_is_address(name) or self._is_this_machine(name))

    def refused_host_line(self, host_header: str) -> str:
        """The one line a request whose ``Host`` is refused gets: how to open the page, and the
        ``--allow-host`` to pass for a proxy of that name (named only where it is a host name or
        an address: the header is the client's)."""
        parsed = _host_and_port(host_header)
        name = parsed[0] if parsed is not None else ""
        if not (name and (_is_address(name) or _HOST_NAME.fullmatch(name))):
            name = "ITS_NAME"
        where = (
            f"this machine's name: open it as {self.machine}, by its address or as 127.0.0.1"
            if self.everywhere
            else "a local address: open it as 127.0.0.1 or localhost"
        )
        return f"not {where}; behind a proxy, start dreamtext view with --allow-host {name}"

    def token_given(self, query: str, cookie_header: str | None, cookie_name: str) -> bool:
        """Whether a request carries this server's token: as ``token`` in its address's
        ``query`` (the address the server printed), or as the cookie ``cookie_name`` that a
        first such request set. Always, for a server without a token."""
        if self.token is None:
            return True
        given = parse_qs(query).get("token", [])
        for item in (cookie_header or "").split(";"):
            name, _, value = item.strip().partition("=")
            if name == cookie_name:
                given.append(value.strip('"'))
        expected = self.token.encode()
        return any(hmac.compare_digest(value.encode(), expected) for value in given)

    def printed_url(self, base: str) -> str:
        """``base`` (``http://127.0.0.1:8000/``) as the address to open: with ``?token=`` where
        the server has one."""
        return base if self.token is None else f"{base}?token={self.token}"

    def _is_this_machine(self, name: str) -> bool:
        """Whether ``name`` is this machine's host name, alone or with one of its own domains: a
        page elsewhere can name a host of its own domain after this machine (node042.evil.example),
        and that name reached the runs while any domain counted."""
        if self.machine == "":
            return False
        if name == self.machine:
            return True
        first, _, domain = name.partition(".")
        return first == self.machine and domain != "" and self._own_domain(domain)

    def _own_domain(self, domain: str) -> bool:
        """Whether ``domain`` is one this machine's name is given with: the resolver's search
        domains and the host name's own, else the domain of ``socket.getfqdn()`` (looked up the
        first time a name asks, then kept)."""
        if domain in self.domains:
            return True
        if self._fqdn_domain is None:
            self._fqdn_domain = socket.getfqdn().lower().partition(".")[2]
        return domain == self._fqdn_domain

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks up the host's DNS name, which can hang offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def log_line(self, text: str) -> None:
        """One line on the terminal (stderr unless the server was given ``log``), its control
        characters as their escapes (an error's text can quote a folder's name)."""
        print(terminal_lines(f"dreamtext view: {text}"), file=self._log or sys.stderr, flush=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception outside the handler's own catch-all (reading the request, say): one line
        instead of socketserver's traceback; a client that hung up is not worth one."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        self.log_line(f"error with a request from {client_address[0]}: {_describe(error)}")

    @property
    def url(self) -> str:
        host = self.server_address[0]
        if host in ALL_INTERFACES:
            host = "127.0.0.1" if self.address_family == socket.AF_INET else "::1"
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.server_port}/"


class ViewHandler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "dreamtext-view"
    protocol_version = "HTTP/1.1"
    # Seconds a connection may wait for a request or a read or write: a page polls every few
    # seconds, and a connection an ssh tunnel dropped without a word kept its thread for good.
    timeout = 300
    # While the standard library's send_error writes its page (end_headers adds the policy).
    _in_error = False

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: the terminal shows the address and errors only."""

    def _respond(self, send_body: bool) -> None:
        self._answering = False  # set once the status line is out: too late for a 500
        self._cookie: str | None = None  # a Set-Cookie for the answer (the token's)
        try:
            self._route(send_body)
        except (ConnectionError, TimeoutError):
            # The browser went away mid-answer (a video seek, a closed tab, a dropped tunnel).
            self.close_connection = True
        except Exception as error:
            shown = self.path if len(self.path) <= 200 else self.path[:200] + "…"
            self.server.log_line(f"error answering {self.command} {shown!r}: {_describe(error)}")
            self.close_connection = True
            if not self._answering:
                with contextlib.suppress(OSError):
                    self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error", send_body)

    def _route(self, send_body: bool) -> None:
        host = self.headers.get("Host", "")
        if not self.server.host_allowed(host):
            refused = self.server.refused_host_line(host)
            return self._send_text(HTTPStatus.FORBIDDEN, refused, send_body)
        try:
            address = urlsplit(self.path)
            path, query = address.path, address.query
        except ValueError:  # "http://[::1/...": not an address this server has
            return self._send_text(HTTPStatus.NOT_FOUND, "not found", send_body)
        if self.server.token is not None:
            # One cookie per port the browser names: two viewers forwarded to 8000 and 8001
            # share the host 127.0.0.1, where a cookie is kept whatever the port.
            port = (_host_and_port(host) or ("", None))[1]
            cookie = "dreamtext-view" if port is None else f"dreamtext-view-{port}"
            if not self.server.token_given("", self.headers.get("Cookie"), cookie):
                if not self.server.token_given(query, None, cookie):
                    return self._send_text(HTTPStatus.FORBIDDEN, NO_TOKEN, send_body)
                parts = path.split("/")[1:]
                if len(parts) in (2, 3) and parts[0] == "run" and parts[2:] in ([], [""]):
                    # A run page's cookie would be kept for its folder (run/NAME/) alone: set it
                    # at the root, whose address the server knows only relatively (a proxy's
                    # prefix is the browser's), which sends the browser back here.
                    back = urlencode({"token": self.server.token, "next": f"run/{parts[1]}/"})
                    return self._send_redirect(f"{page_base(path)}?{back}", send_body)
                # No Path: the browser scopes it to the folder of the address it opened, which
                # behind a proxy is the proxy's prefix (/rnode/node01/8000), where the pages are.
                self._cookie = f"{cookie}={self.server.token}; HttpOnly; SameSite=Lax"
                back = parse_qs(query).get("next", [""])[0]
                if path == "/" and _RUN_PAGE.fullmatch(back):
                    return self._send_redirect(f"./{back}", send_body)
        parts = path.split("/")[1:]
        catalog, poll_ms = self.server.catalog, self.server.poll_ms
        # Every address in a page and its data is relative (see page.Links): a proxy may serve
        # this server under a path of its own, and a page's <base> is the root it sees.
        if path in ("/", "/api/runs.json"):
            runs = self.server.gallery.runs(catalog.runs())
            links = server_links("api/runs.json", poll_ms, base=page_base(path))
            links = replace(links, folders=tuple(str(folder) for folder, _ in catalog.sources))
            since = parse_qs(query).get("since", [None])[0] if path != "/" else None
            answer = self.server.gallery_text(runs, links, since)
            if path == "/":
                page = render_page({"page": "gallery"}, links, answer.text)
                return self._send_html(page, send_body)
            text = answer.text if answer.delta is None else answer.delta
            return self._send_json_text(text, send_body, answer.etag)
        if len(parts) in (2, 3) and parts[0] == "run" and parts[2:] in ([], [""]):
            run_id = unquote(parts[1])
            location = catalog.find(run_id)
            links = server_links(f"api/run/{parts[1]}.json", poll_ms, base=page_base(path))
            if location is None or _removed(location):
                # A run page opened again after its run was removed: a page that says so.
                page = render_page(gone_page_json(run_id, links), links)
                return self._send_html(page, send_body, HTTPStatus.NOT_FOUND)
            answer = self.server.run_text(read_run(location), links)
            return self._send_html(render_page(answer.data, links, answer.text), send_body)
        if len(parts) == 3 and parts[:2] == ["api", "run"] and parts[2].endswith(".json"):
            run_id = unquote(parts[2][: -len(".json")])
            location = catalog.find(run_id)
            if location is None or _removed(location):
                # Said in JSON, so that the run's open page tells "the run is gone" from "the
                # server is not answering" (a proxy's error page, a stopped server).
                gone = script_json({"gone": run_id}).encode()
                content_type = "application/json; charset=utf-8"
                return self._send_bytes(gone, content_type, send_body, HTTPStatus.NOT_FOUND)
            links = server_links(f"api/run/{parts[2]}", poll_ms)
            since = parse_qs(query).get("since", [None])[0]
            answer = self.server.run_text(read_run(location), links, since)
            text = answer.text if answer.delta is None else answer.delta
            return self._send_json_text(text, send_body, answer.etag)
        if len(parts) == 2 and parts[0] == "static" and parts[1] in ASSETS:
            content_type = mimetypes.guess_type(parts[1])[0] or "text/plain"
            if content_type.startswith(("text/", "application/javascript")):
                content_type += "; charset=utf-8"
            return self._send_bytes(asset_bytes(parts[1]), content_type, send_body)
        if len(parts) >= 3 and parts[0] == "files":
            location = catalog.find(unquote(parts[1]))
            if location is not None and location.path is not None:
                file = workspace_file(location.path, "/".join(parts[2:]))
                # Only what the run's pages link to: not a notes.json or image of the user's own
                # in the folder (on a shared machine, others can reach 127.0.0.1:PORT).
                rel = "/".join(unquote(segment) for segment in parts[2:])
                if file is not None and is_linked_file(location.path, rel):
                    return self._send_file(file, send_body)
        if len(parts) == 3 and parts[0] == "download" and parts[2].endswith(".zip"):
            location = catalog.find(unquote(parts[1]))
            if location is not None and location.path is not None and not _removed(location):
                run = read_run(location, with_series=False, follow_logs=False)
                if zip_members(run):
                    return self._send_zip(run, send_body)
        return self._send_text(HTTPStatus.NOT_FOUND, "not found", send_body)

    def _headers(
        self, status: int, content_type: str, length: int, encoding: str | None = None
    ) -> None:
        self._answering = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        if content_type.startswith(("text/html", "application/json")):
            self.send_header("Vary", "Accept-Encoding")
        self.send_header("Cache-Control", "no-cache")
        self._policy_headers()

    def _policy_headers(self) -> None:
        """What every answer says of what a browser may do with it."""
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        # A page elsewhere could embed a run's preview and learn from its load which runs exist.
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's error page for a request it cannot read (a request line too
        long, too many headers, a method this server has no do_ for), with the headers every
        other answer carries: its send_error sends them from end_headers."""
        self._in_error = True
        try:
            super().send_error(code, message, explain)
        finally:
            self._in_error = False

    def end_headers(self) -> None:
        if self._in_error:
            self._policy_headers()
        if getattr(self, "_cookie", None):
            self.send_header("Set-Cookie", self._cookie)
            self._cookie = None
        super().end_headers()

    def _send_bytes(self, body: bytes, content_type: str, send_body: bool, status=200) -> None:
        self._headers(status, content_type, len(body))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_redirect(self, location: str, send_body: bool) -> None:
        """A 303 to ``location``, an address relative to the request's (a proxy's prefix, which
        this server never sees, stays in what the browser resolves it against)."""
        body = f"see {location}\n".encode()
        self._headers(HTTPStatus.SEE_OTHER, "text/plain; charset=utf-8", len(body))
        self.send_header("Location", location)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_text(self, status: int, text: str, send_body: bool) -> None:
        self._send_bytes((text + "\n").encode(), "text/plain; charset=utf-8", send_body, status)

    def _send_html(self, page: str, send_body: bool, status: int = HTTPStatus.OK) -> None:
        body, encoding = self._compressed(page.encode("utf-8"))
        self._headers(status, "text/html; charset=utf-8", len(body), encoding)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _compressed(self, body: bytes) -> tuple[bytes, str | None]:
        """``body`` gzipped when the client takes gzip and it is worth it (a page or the data of
        many runs: a gallery's 850 KiB of JSON is 35 KiB, in ~1.5 ms at level 1)."""
        if len(body) < COMPRESS_FROM_BYTES or not _takes_gzip(self.headers.get("Accept-Encoding")):
            return body, None
        return gzip.compress(body, compresslevel=1, mtime=0), "gzip"

    def _send_json_text(self, text: str, send_body: bool, etag: str | None = None) -> None:
        """JSON, tagged (``etag``, else a digest of ``text``); ``304 Not Modified`` without it
        when the request's ``If-None-Match`` names the tag (the page's last answer). A gallery's
        answer of the runs that changed since the poll's cursor is tagged as the whole gallery
        it makes of the page's runs (the page sends that tag back)."""
        etag = etag or json_etag(text)
        if _names_tag(self.headers.get("If-None-Match"), etag):
            self._answering = True
            self.send_response(HTTPStatus.NOT_MODIFIED)
            # What the 200 would carry of these (RFC 9110, 15.4.5): a cache keeps Vary's choice.
            self.send_header("ETag", etag)
            self.send_header("Vary", "Accept-Encoding")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            return
        body, encoding = self._compressed(text.encode("utf-8"))
        self._headers(HTTPStatus.OK, "application/json; charset=utf-8", len(body), encoding)
        self.send_header("ETag", etag)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_zip(self, run: Run, send_body: bool) -> None:
        """The run's mesh zip, as a download named after the run. Written into a temporary
        file (removed as it is closed, or by the system if this process dies first), then sent
        from it: memory holds a block of it at a time, and the download has its length (the
        browser shows how far it is) and an error's answer, both known before it starts."""
        with tempfile.TemporaryFile() as spool:
            try:
                write_zip(run, spool)
            except PermissionError as error:  # another user's run, say: no retry will help
                return self._send_text(HTTPStatus.FORBIDDEN, unreadable(error), send_body)
            except OSError as error:
                if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                    full = (
                        f"no room for the zip in {tempfile.gettempdir()}: {error.strerror}; "
                        "free some, or start dreamtext view with TMPDIR set to a folder with room"
                    )
                    return self._send_text(HTTPStatus.INSUFFICIENT_STORAGE, full, send_body)
                # An export swapping the mesh folder between the listing and the read.
                busy = "the run's mesh files are being replaced: try again in a moment"
                return self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, busy, send_body)
            size = spool.tell()
            self._headers(HTTPStatus.OK, "application/zip", size)
            self.send_header("Content-Disposition", _attachment(zip_name(run)))
            self.end_headers()
            if send_body:
                spool.seek(0)
                if _copy(spool, self.wfile, size):  # not expected of a file this process wrote
                    self.close_connection = True

    def _send_file(self, file: Path, send_body: bool) -> None:
        """The file, or the one byte range a ``Range`` header asks for (video seeking)."""
        content_type = SERVED_SUFFIXES[file.suffix.lower()]
        try:
            opened = file.open("rb")
        except PermissionError as error:
            return self._send_text(HTTPStatus.FORBIDDEN, unreadable(error), send_body)
        except FileNotFoundError:  # removed since it was found (a resume clearing previews)
            return self._send_text(HTTPStatus.NOT_FOUND, "not found", send_body)
        with opened as f:
            size = f.seek(0, 2)
            start, end, status = 0, size - 1, HTTPStatus.OK
            match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                else:
                    start = max(size - int(match.group(2)), 0)
                if start > end:
                    self._headers(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, content_type, 0)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.end_headers()
                    return
                status = HTTPStatus.PARTIAL_CONTENT
            self._headers(status, content_type, end - start + 1)
            self.send_header("Accept-Ranges", "bytes")
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if send_body:
                f.seek(start)
                if _copy(f, self.wfile, end - start + 1):
                    # Fewer bytes than the Content-Length sent: on a connection kept open the
                    # browser would wait for the rest, and read the next answer as them.
                    self.close_connection = True


def _removed(location: RunLocation) -> bool:
    """Whether a run's workspace is gone since the scan that found it (``Catalog.find`` answers
    from a scan up to :data:`~dreamtext.view.workspaces.FIND_REUSES_SCAN_S` old)."""
    return location.path is not None and not location.path.is_dir()


def _attachment(name: str) -> str:
    """``Content-Disposition`` of a download named ``name`` (RFC 6266): ``filename*`` for the
    name in UTF-8 (a run's name may hold letters of any script), ``filename`` with what ASCII
    keeps of it for clients that know only that."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _names_tag(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header (``"a", W/"b"`` or ``*``) names ``etag``: compared
    weakly, as RFC 9110 asks for this header."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag.removeprefix("W/") in (tag.removeprefix("W/") for tag in tags)


def _takes_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header (``gzip, deflate, br``; ``gzip;q=0`` refuses it)
    takes gzip."""
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def unreadable(error: OSError) -> str:
    """The line for a run file this process may not read (mode 600 in another user's run)."""
    name = Path(str(error.filename)).name if error.filename else "a file"
    return (
        f"cannot read {name} of this run: {error.strerror or 'permission denied'}; make the "
        "run's files readable by the user running dreamtext (chmod -R a+rX RUN_FOLDER)"
    )


def _describe(error: BaseException | None) -> str:
    """``Type: first line`` of an exception, for a one-line log."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _copy(source, target, length: int, chunk: int = 1 << 16) -> int:
    """Copy ``length`` bytes; return how many of them ``source`` no longer held (a log cut
    short by a resume since its size was sent)."""
    while length > 0:
        data = source.read(min(chunk, length))
        if not data:
            break
        target.write(data)
        length -= len(data)
    return length


# Linux's ioctl that reads an interface's IPv4 address (<linux/sockios.h>).
_SIOCGIFADDR = 0x8915
# The viewer cannot know the login node's name: the user puts it in. One word that is not shell
# syntax (``<login node>`` pasted as it is would be a redirection from a file "login"), so a line
# pasted unedited fails with ssh's "Could not resolve hostname login_node".
LOGIN_NODE = "LOGIN_NODE"

# More addresses than a node has networks (ethernet, InfiniBand, a management network) are
# containers' bridges and the like: not worth a longer line.
MAX_ADDRESSES_SHOWN = 4


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses, loopback and link-local left out, each once: those of its
    network interfaces on Linux, else those its host name resolves to. ``[]`` where neither can
    be read."""
    found: list[str] = []
    if sys.platform.startswith("linux"):
        import fcntl
        import struct

        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _, name in socket.if_nameindex():
                request = struct.pack("256s", name.encode()[:15])
                try:  # EADDRNOTAVAIL for an interface without an IPv4 address
                    answer = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
                except OSError:
                    continue
                found.append(socket.inet_ntoa(answer[20:24]))
    else:
        with contextlib.suppress(OSError):
            infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
            found = [info[4][0] for info in infos]
    shown = [a for a in dict.fromkeys(found) if not a.startswith(("127.", "169.254.", "0."))]
    return shown[:MAX_ADDRESSES_SHOWN]


def make_server(
    catalog: Catalog,
    host: str = "127.0.0.1",
    port: int = 0,
    poll_ms: int = 2000,
    log: TextIO | None = None,
    allowed_hosts: Collection[str] = (),
    token: str | None = None,
) -> ViewServer:
    """Bind (``port`` 0: any free port) without serving yet; user errors as ``DreamtextError``.
    ``poll_ms``: how often open pages ask for changes; ``log``: where errors go (stderr);
    ``allowed_hosts``: the names of proxies it answers (``--allow-host``); ``token``: what
    every request must carry (``ViewServer.token_given``), none by default."""
    allowed_hosts = [allowed_host_name(name) for name in allowed_hosts]  # refused before binding
    in_use = f"port {port} is in use on {host}; pass another --port (0 picks a free one)"
    if port and SHARED_PORT_BINDS and _answered(host, port):
        raise DreamtextError(in_use)
    try:
        return ViewServer((host, port), catalog, poll_ms, log, allowed_hosts, token)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise DreamtextError(in_use) from None
        reason = error.strerror or str(error)
        if error.errno == errno.EACCES and 0 < port < 1024:
            # Ports under 1024 are the system's: "check --host" named the wrong flag.
            raise DreamtextError(
                f"cannot listen on {host}:{port}: {reason} (ports under 1024 need privileges); "
                "pass a --port of 1024 or more (0 picks a free one)"
            ) from None
        raise DreamtextError(f"cannot listen on {host}:{port}: {reason}; check --host") from None


def _answered(host: str, port: int) -> bool:
    """Whether a server already accepts connections on ``host``:``port`` (on this machine's
    loopback address for every interface), which a bind that may share the port
    (:data:`SHARED_PORT_BINDS`) would not refuse."""
    if host in ALL_INTERFACES:
        host = "::1" if host == "::" else "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def serve(
    folders: list[Path],
    host: str,
    port: int,
    out: TextIO | None = None,
    allowed_hosts: Collection[str] = (),
    token: bool = True,
    renew_token: bool = False,
    state: Path | None = None,
) -> None:
    """Serve the runs under ``folders`` until Ctrl-C; print the address first (on ``out``, else
    the ``sys.stdout`` of the moment). Folders without runs yet, or not made yet, are served too
    (the viewer started beside a batch), with a line that says so. ``allowed_hosts``: the names
    of proxies it answers too (``--allow-host``); ``token``: whether requests must carry the
    user's token (``viewers.viewer_token``, kept in ``state``, default
    ``viewers.state_folder()``), which the printed addresses hold (``--no-token``: not);
    ``renew_token``: make a new one in place of the kept one (``--new-token``). While it
    serves, a record of it in ``state`` tells ``dreamtext view --list`` its address."""
    out = out or sys.stdout
    catalog = Catalog(folders, empty_ok=True)
    server = make_server(catalog, host, port, allowed_hosts=allowed_hosts)
    try:  # once bound: a port in use leaves the kept token as it was (--new-token too)
        # 128 random bits, kept for the user's later starts; shown only to the user.
        # A --new-token start waiting long for another's lock says so (viewers._token_lock).
        waiting = functools.partial(print_note, flush=True)
        server.token, not_kept = (
            viewer_token(renew_token, state, say=waiting) if token else (None, None)
        )
    except BaseException:
        server.server_close()
        raise
    url, p = server.printed_url(server.url), server.server_port
    local = server.printed_url(f"http://127.0.0.1:{p}/")
    if not_kept is not None:
        print_note(not_kept)
    n = len(catalog.runs())
    print(f"dreamtext view: {n} run{'s' if n != 1 else ''} at {url}", file=out)
    missing = [f for f in folders if not f.exists()]
    there = [f for f in folders if f not in missing]
    if missing:  # a batch about to make it, or a typo: say so
        shown = ", ".join(shown_path(f) for f in missing)
        print(
            f"  no folder {shown} yet: the page shows its runs once a batch makes it "
            "(check the path if none is starting)",
            file=out,
        )
    # The run's mesh/ or checkpoints/, or links out: no run will ever appear there. Links to
    # runs outside and folders of runs a level down are said beside runs too: the gallery
    # leaves them out.
    given = {f.resolve() for f in there}
    inside = [
        hint for f in there for hint in (folder_hints(f) if n == 0 else left_out_hints(f, given))
    ]
    for hint in inside:
        print(f"  {hint}", file=out)
    if n == 0 and there and not inside:  # a batch about to start, or the wrong folder
        shown = ", ".join(shown_path(f) for f in there)
        print(
            f"  no runs in {shown} yet: the page shows them as they start (a run's folder "
            "holds config.json, log.jsonl or descriptor/sentence.json)",
            file=out,
        )
    # The name other machines reach this one by, as far as it knows (on a cluster, the node).
    machine = socket.gethostname() or "<this host>"
    # Without ExitOnForwardFailure, ssh whose port is taken on the user's side (another viewer,
    # a notebook) only warns and logs in: http://127.0.0.1:<port>/ then opens whatever holds
    # that port there, not these runs.
    forward = "-o ExitOnForwardFailure=yes -L"
    # A laptop outside a cluster reaches its login node only, and the node's name resolves
    # there, not on the laptop: the first line alone ends in "Could not resolve hostname".
    if server.everywhere:  # every interface (`--host 0` too)
        # Where the name does not resolve from the user's side (a node outside the cluster's
        # DNS, a portal that connects by address), the addresses are what reaches it.
        by_address = ", ".join(
            server.printed_url(f"http://{address}:{p}/") for address in machine_addresses()
        )
        print(
            "  listening on every network interface of this machine (--host): from another "
            f"machine, open {server.printed_url(f'http://{machine}:{p}/')}"
            + (f" (by address: {by_address})" if by_address else ""),
            file=out,
        )
        # The login node connects to the node's port itself: no ssh to the node is needed,
        # which is all some clusters allow.
        print(
            f"  through a login node: ssh {forward} {p}:{machine}:{p} {LOGIN_NODE}, "
            f"then open {local}",
            file=out,
        )
    else:
        target = f"[{host}]" if ":" in host else host
        print(
            f"  from another machine: ssh {forward} {p}:{target}:{p} {machine}, then open {local}",
            file=out,
        )
        print(
            f"  through a login node: ssh -J {LOGIN_NODE} {forward} {p}:{target}:{p} {machine}",
            file=out,
        )
    if server.proxy_hosts:
        names = ", ".join(sorted(server.proxy_hosts))
        print(f"  answers too as {names} (--allow-host), for a proxy of that name", file=out)
    if renew_token and not_kept is None:
        print(
            "  a new token (--new-token): pages opened with the old one need this address, "
            "and viewers already running keep the old one until started again",
            file=out,
        )
    print("  Ctrl-C stops it", file=out, flush=True)
    handle = record = None
    try:
        handle, record, unrecorded = record_viewer(url, p, host, folders, state)
        if unrecorded is not None and not_kept is None:  # that line said so already
            print_note(unrecorded, flush=True)
        server.heartbeat = record_heartbeat(handle)
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        forget_viewer(handle, record)
        server.server_close()
    print("dreamtext view: stopped", file=out, flush=True)
