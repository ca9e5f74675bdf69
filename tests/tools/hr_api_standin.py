#!/usr/bin/env python3
"""hr_api_standin.py — a local STAND-IN for an HR system's employee API, for
tests only.  The real HR clouds cannot be reached from here; this serves the
one request per source that `idstream ingest http` makes to complete thin
webhook events (ingest/enrich.h), following the documented contract:

  bamboohr  GET  /v1/employees/<id>?fields=...   Basic <token>:x
  hibob     POST /v1/people/<id>                 Basic <user>:<token>
  gusto     GET  /v1/employees/<id>              Bearer <token>
  personio  GET  /v1/company/employees/<id>      Bearer <token>
            -> {"success": true, "data": {"type": "Employee", "attributes": {...}}}

and, for BambooHR, the "changed since" request that `idstream ingest poll
bamboohr` makes (ingest/poll_bamboohr.h):

  bamboohr  GET  /v1/employees/changed?since=<ISO 8601>[&type=...]  Basic <token>:x
            -> {"latest": "<ISO 8601>", "employees": {"<id>": {"id": "<id>",
                "action": "Inserted"|"Updated"|"Deleted", "lastChanged": "..."}}}

BambooHR paths may carry the documented prefix /api/gateway.php/<company>.
BambooHR answers XML unless asked for JSON; this stand-in only speaks JSON and
answers 406 to a BambooHR request without "Accept: application/json".

Usage:
  hr_api_standin.py --source hibob --records FILE --token-file FILE
                    [--port N] [--port-file FILE]

FILE holds {"<employee id>": {<record in the source's field names>}, ...}; it
is re-read on every request, so a test can change the HR data while the
stand-in runs.  Unknown ids get 404, a wrong or missing Authorization 401.
Keys of a record starting with "_" are stand-in bookkeeping, never served:
"_lastChanged" (ISO 8601; records without it are not in the changed list)
and "_action" ("Inserted", "Updated" — the default — or "Deleted"; a Deleted
record answers 404 like a deleted BambooHR employee).  A "since" outside the
documented formats gets 400.
Each request is logged to stdout as one line: METHOD PATH STATUS.
"""
import argparse
import base64
import datetime
import json
import re
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATHS = {
    "bamboohr": ("GET", "/v1/employees/"),
    "hibob": ("POST", "/v1/people/"),
    "gusto": ("GET", "/v1/employees/"),
    "personio": ("GET", "/v1/company/employees/"),
}


def expected_auth(source, token):
    if source == "bamboohr":
        return "Basic " + base64.b64encode((token + ":x").encode()).decode()
    if source == "hibob":
        user_token = token if ":" in token else token + ":"
        return "Basic " + base64.b64encode(user_token.encode()).decode()
    return "Bearer " + token


# The "since" formats BambooHR documents (no fractions, an explicit zone).
SINCE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:?\d{2})$")
BAMBOOHR_PREFIX = re.compile(r"^/api/gateway\.php/[^/]+(?=/)")


def parse_time(s):
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    m = re.match(r"^(.*[+-])(\d{2})(\d{2})$", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    return datetime.datetime.fromisoformat(s)


def bamboohr_changed(records, since, kind):
    """The changed-since answer over the records' bookkeeping keys."""
    out, latest = {}, None
    for emp, rec in records.items():
        lc = rec.get("_lastChanged")
        if lc is None or parse_time(lc) < since:
            continue
        action = rec.get("_action", "Updated")
        if kind and kind.lower() not in ("all", action.lower()):
            continue
        out[emp] = {"id": emp, "action": action, "lastChanged": lc}
        if latest is None or parse_time(lc) > parse_time(latest):
            latest = lc
    # PHP's json_encode of an empty array, as the real API gives it.
    return {"latest": latest, "employees": out or []}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, choices=sorted(PATHS))
    ap.add_argument("--records", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    with open(args.token_file) as f:
        token = f.readline().rstrip("\r\n")
    auth = expected_auth(args.source, token)
    method, prefix = PATHS[args.source]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            print(f"{self.command} {self.path} {status}", flush=True)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            split = urllib.parse.urlsplit(self.path)
            path = split.path
            if args.source == "bamboohr":
                path = BAMBOOHR_PREFIX.sub("", path)
            if self.command != method or not path.startswith(prefix):
                return self.answer(404, {"error": "no such endpoint"})
            if self.headers.get("Authorization") != auth:
                return self.answer(401, {"error": "unauthorized"})
            if (args.source == "bamboohr" and
                    "application/json" not in (self.headers.get("Accept") or "")):
                return self.answer(406, {"error": "send Accept: application/json "
                                                  "(this stand-in does not speak XML)"})
            emp = urllib.parse.unquote(path[len(prefix):])
            with open(args.records) as f:
                records = json.load(f)
            if args.source == "bamboohr" and emp.rstrip("/") == "changed":
                q = urllib.parse.parse_qs(split.query)
                since = (q.get("since") or [""])[0]
                if not SINCE_RE.match(since):
                    return self.answer(400, {"error": "since must be ISO 8601 "
                                                      "(yyyy-mm-ddThh:mm:ssZ or "
                                                      "an offset)"})
                kind = (q.get("type") or [""])[0]
                return self.answer(200, bamboohr_changed(records, parse_time(since),
                                                         kind))
            if emp not in records or records[emp].get("_action") == "Deleted":
                return self.answer(404, {"error": "employee not found"})
            rec = {k: v for k, v in records[emp].items() if not k.startswith("_")}
            if args.source == "personio":
                rec = {"success": True, "data": {"type": "Employee", "attributes": rec}}
            return self.answer(200, rec)

        do_GET = handle_any
        do_POST = handle_any

        def log_message(self, fmt, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{srv.server_address[1]}\n")
        import os
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"hr_api_standin ({args.source}) on 127.0.0.1:{srv.server_address[1]}",
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
