"""A local fake of the Salesforce REST API over HTTPS, for tests (never the internet).

It answers with the real API's shapes: the OAuth token endpoint (client credentials,
JWT bearer and username-password grants), sObject create and upsert by external id,
and errors as a JSON list of ``{message, errorCode, fields}``. Usage::

    ca = trustme.CA()
    with FakeSalesforce(ca) as fake:
        settings = fake.settings(external_id_field="Lead_Bridge_Id__c")  # connector settings
        fake.fail_next(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
        fake.expire_tokens()          # every issued token answers 401 INVALID_SESSION_ID
        fake.drop_next()              # close the connection without an answer
        fake.delay_next(1.0)          # answer late (for client timeouts)
        fake.add_record("Lead", {...})  # seed records (two with one external id -> 300)
        fake.requests                 # every request: method, path, headers, body
        fake.records["Lead"]          # record id -> fields, as Salesforce holds them

sObject Collections upsert (``PATCH .../composite/sobjects/<sobject>/<field>``,
at most 200 records, ``allOrNone: false``) answers one ``{id, success, errors,
created}`` per record, in order; ``fail_record(external_id, code, ...)`` makes
that record fail inside the collection. Every API answer carries
``Sforce-Limit-Info: api-usage=<used>/<limit>`` (``api_used`` counts the API
requests, ``api_limit`` is the org's allocation); ``api_calls(kind)`` lists them.

``target="token"`` makes ``fail_next``/``drop_next``/``delay_next`` hit the token
endpoint instead of the sObject calls. The fake checks a Lead like Salesforce does:
``LastName`` and ``Company`` are required and ``Email`` must look like an address.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import socket
import ssl
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import trustme

Target = Literal["sobjects", "token"]

CLIENT_ID = "fake-consumer-key"
CLIENT_SECRET = "fake-consumer-secret"
USERNAME = "integration@example.com"
PASSWORD = "fake-password"
SECURITY_TOKEN = "fake-security-token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Key prefixes of record ids: 00Q is Lead; anything else gets a custom-object prefix.
_PREFIX = {"Lead": "00Q", "Contact": "003", "Account": "001"}


@dataclass
class Recorded:
    method: str
    path: str  # as sent, still percent-encoded
    headers: dict[str, str]
    body: Any  # parsed JSON, a form dict for the token endpoint, or None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class _Behaviour:
    target: Target
    status: int = 0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


class FakeSalesforce:
    def __init__(self, ca: trustme.CA, *, update_status_204: bool = False) -> None:
        self.ca = ca
        # True mimics API versions before 46.0: an upsert that updates answers 204
        self.update_status_204 = update_status_204
        self.requests: list[Recorded] = []
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.grants: list[str] = []  # grant_type of every token request
        self.tokens: set[str] = set()
        self._behaviours: deque[_Behaviour] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fake-salesforce-")
        self.ca_bundle = Path(self._dir.name) / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        self._jwt_public_key: bytes | None = None
        self.api_limit = 15000
        self.api_used = 0
        self._record_failures: dict[str, deque[tuple[str, str, list[str]]]] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSalesforce:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server = _Server(("127.0.0.1", 0), _Handler, self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._dir.cleanup()

    def __enter__(self) -> FakeSalesforce:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------------ configuration

    def settings(self, mode: str = "client_credentials", **overrides: Any) -> dict[str, Any]:
        """Connector settings (as in YAML) that reach this fake with valid credentials."""
        auth: dict[str, Any] = {"mode": mode}
        if mode == "client_credentials":
            auth |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        elif mode == "password":
            auth |= {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "username": USERNAME,
                "password": PASSWORD,
                "security_token": SECURITY_TOKEN,
            }
        elif mode == "jwt":
            auth |= {
                "client_id": CLIENT_ID,
                "username": USERNAME,
                "private_key_file": str(self.jwt_key_file()),
            }
        elif mode == "token":
            auth["access_token"] = self.issue_token()
        out: dict[str, Any] = {
            "auth": auth,
            "login_url": self.url,
            "ca_bundle": str(self.ca_bundle),
            "allow_private": True,  # the fake listens on 127.0.0.1
        }
        if mode == "token":
            out["instance_url"] = self.url
        return out | overrides

    def jwt_key_file(self) -> Path:
        """A PEM RSA private key whose public half the fake accepts for JWT bearer."""
        path = Path(self._dir.name) / "jwt-key.pem"
        if self._jwt_public_key is None:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            self._jwt_public_key = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return path

    def issue_token(self) -> str:
        token = "00D" + secrets.token_hex(8) + "!" + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens.add(token)
        return token

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def fail_next(
        self,
        status: int,
        error_code: str = "",
        message: str = "",
        *,
        fields: list[str] | None = None,
        times: int = 1,
        target: Target = "sobjects",
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next ``times`` calls to ``target`` with this error."""
        if body is None:
            if target == "token":
                body = {"error": error_code, "error_description": message}
            else:
                body = [{"message": message, "errorCode": error_code, "fields": fields or []}]
        self._queue(_Behaviour(target, status, body, headers or {}), times)

    def drop_next(self, *, times: int = 1, target: Target = "sobjects") -> None:
        self._queue(_Behaviour(target, drop=True), times)

    def delay_next(self, seconds: float, *, times: int = 1, target: Target = "sobjects") -> None:
        self._queue(_Behaviour(target, delay=seconds), times)

    def fail_record(
        self,
        external_id: str,
        error_code: str,
        message: str = "",
        *,
        fields: list[str] | None = None,
        times: int = 1,
    ) -> None:
        """The record with this external id fails the next ``times`` collection upserts."""
        with self._lock:
            queue = self._record_failures.setdefault(external_id, deque())
            queue.extend((error_code, message, fields or []) for _ in range(times))

    def api_calls(self, kind: Literal["collection", "single"] | None = None) -> list[Recorded]:
        """Upserts and creates: ``collection`` (composite) or ``single`` (sobjects)."""
        calls = [r for r in self.calls() if "/limits" not in r.path]
        if kind is None:
            return calls
        return [r for r in calls if ("/composite/" in r.path) == (kind == "collection")]

    def add_record(self, sobject: str, fields: dict[str, Any]) -> str:
        with self._lock:
            return self._insert(sobject, dict(fields))

    def calls(self, target: Target = "sobjects") -> list[Recorded]:
        token = target == "token"
        return [r for r in self.requests if r.path.startswith("/services/oauth2/") == token]

    def _queue(self, behaviour: _Behaviour, times: int) -> None:
        with self._lock:
            self._behaviours.extend(behaviour for _ in range(times))

    def _next_behaviour(self, target: Target) -> _Behaviour | None:
        with self._lock:
            for behaviour in self._behaviours:
                if behaviour.target == target:
                    self._behaviours.remove(behaviour)
                    return behaviour
        return None

    # ------------------------------------------------------------------ the API

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> _Answer:
        target: Target = "token" if path.startswith("/services/oauth2/") else "sobjects"
        body: Any = None
        if target == "token":
            body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        elif raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body))
        behaviour = self._next_behaviour(target)
        if behaviour is not None:
            if behaviour.drop:
                return _Answer(drop=True)
            if behaviour.delay:
                time.sleep(behaviour.delay)
            else:
                return _Answer(behaviour.status, behaviour.body, behaviour.headers)
        if target == "token":
            return self._token(path, body)
        answer = self._sobjects(method, path, headers, body)
        if answer.status != 401:  # an API request the org counts
            with self._lock:
                self.api_used += 1
                used = self.api_used
            answer.headers["Sforce-Limit-Info"] = f"api-usage={used}/{self.api_limit}"
        return answer

    def _token(self, path: str, form: dict[str, str]) -> _Answer:
        if path != "/services/oauth2/token":
            return _Answer(404, {"error": "not_found"})
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        ok = False
        if grant == "client_credentials":
            ok = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        elif grant == "password":
            ok = (
                form.get("client_id") == CLIENT_ID
                and form.get("client_secret") == CLIENT_SECRET
                and form.get("username") == USERNAME
                and form.get("password") == PASSWORD + SECURITY_TOKEN
            )
        elif grant == JWT_GRANT:
            ok = self._valid_jwt(form.get("assertion", ""))
        else:
            return _Answer(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
            )
        if not ok:
            error = "invalid_grant" if grant != "client_credentials" else "invalid_client"
            return _Answer(400, {"error": error, "error_description": "authentication failure"})
        return _Answer(
            200,
            {
                "access_token": self.issue_token(),
                "instance_url": self.url,
                "id": f"{self.url}/id/00Dxx0000000001/005xx0000000001",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
                "signature": "ZmFrZQ==",
            },
        )

    def _valid_jwt(self, assertion: str) -> bool:
        import jwt

        if self._jwt_public_key is None:
            return False
        try:
            claims = jwt.decode(
                assertion, self._jwt_public_key, algorithms=["RS256"], audience=self.url
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == CLIENT_ID and claims.get("sub") == USERNAME)

    def _sobjects(self, method: str, path: str, headers: dict[str, str], body: Any) -> _Answer:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        with self._lock:
            valid = auth.removeprefix("Bearer ") in self.tokens
        if not valid:
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        parts = [unquote(p) for p in urlsplit(path).path.split("/")]
        if method == "GET" and [p for p in parts[4:] if p] == ["limits"]:
            return _Answer(200, {"DailyApiRequests": {"Max": 15000, "Remaining": 14990}})
        if len(parts) >= 8 and parts[4:6] == ["composite", "sobjects"]:
            if method != "PATCH":
                return _error(405, "METHOD_NOT_ALLOWED", "HTTP Method not allowed")
            return self._collection_upsert(parts[3], parts[6], parts[7], body)
        # ["", "services", "data", "v62.0", "sobjects", <sobject>, (<field>, <value>)]
        if len(parts) < 6 or parts[1:3] != ["services", "data"] or parts[4] != "sobjects":
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        version, sobject, rest = parts[3], parts[5], [p for p in parts[6:] if p]
        if not isinstance(body, dict):
            return _error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        if method == "POST" and not rest:
            return self._create(version, sobject, body)
        if method == "PATCH" and len(rest) == 2:
            return self._upsert(version, sobject, rest[0], rest[1], body)
        return _error(404, "NOT_FOUND", "The requested resource does not exist")

    def _create(self, version: str, sobject: str, body: dict[str, Any]) -> _Answer:
        problem = _check(sobject, body)
        if problem is not None:
            return problem
        with self._lock:
            record_id = self._insert(sobject, body)
        return _Answer(201, {"id": record_id, "success": True, "errors": []})

    def _upsert(
        self, version: str, sobject: str, field: str, value: str, body: dict[str, Any]
    ) -> _Answer:
        if any(k.lower() == field.lower() for k in body):
            return _error(
                400,
                "INVALID_FIELD",
                f"The field {field} is the external ID of this upsert and cannot be in the body",
                [field],
            )
        with self._lock:
            table = self.records.setdefault(sobject, {})
            matches = [rid for rid, rec in table.items() if rec.get(field) == value]
        if len(matches) > 1:
            return _Answer(
                300, [f"/services/data/{version}/sobjects/{sobject}/{m}" for m in matches]
            )
        if matches:
            with self._lock:
                merged = table[matches[0]] | body
                problem = _check(sobject, merged)
                if problem is None:
                    table[matches[0]] = merged
            if problem is not None:
                return problem
            if self.update_status_204:
                return _Answer(204)
            return _Answer(200, {"id": matches[0], "success": True, "errors": [], "created": False})
        record = body | {field: value}
        problem = _check(sobject, record)
        if problem is not None:
            return problem
        with self._lock:
            record_id = self._insert(sobject, record)
        return _Answer(201, {"id": record_id, "success": True, "errors": [], "created": True})

    def _collection_upsert(self, version: str, sobject: str, field: str, body: Any) -> _Answer:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return _error(400, "JSON_PARSER_ERROR", "Expected an object with a records list")
        records = body["records"]
        if len(records) > 200:
            return _error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more")
        if body.get("allOrNone"):
            return _error(400, "INVALID_INPUT", "the fake supports allOrNone false only")
        results = []
        for record in records:
            if not isinstance(record, dict):
                return _error(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
            attributes = record.get("attributes") or {}
            if attributes.get("type") != sobject:
                return _error(400, "INVALID_TYPE", "attributes.type must name the sObject")
            fields = {k: v for k, v in record.items() if k != "attributes"}
            value = fields.pop(field, None)
            if not value:
                results.append(_failure("MISSING_ARGUMENT", f"{field} not specified", [field]))
                continue
            with self._lock:
                queued = self._record_failures.get(str(value))
                failure = queued.popleft() if queued else None
            if failure is not None:
                results.append(_failure(*failure))
                continue
            answer = self._upsert(version, sobject, field, str(value), fields)
            if answer.status >= 300:
                errors = answer.body if isinstance(answer.body, list) else []
                if answer.status == 300:
                    errors = [{"errorCode": "DUPLICATE_EXTERNAL_ID", "message": "", "fields": []}]
                first = errors[0] if errors else {"errorCode": "UNKNOWN_EXCEPTION"}
                results.append(
                    _failure(
                        str(first.get("errorCode")),
                        str(first.get("message") or ""),
                        list(first.get("fields") or []),
                    )
                )
                continue
            ok = answer.body if isinstance(answer.body, dict) else {}
            with self._lock:
                table = self.records.get(sobject, {})
                record_id = ok.get("id") or next(
                    (rid for rid, rec in table.items() if rec.get(field) == value), None
                )
            results.append(
                {"id": record_id, "success": True, "errors": [], "created": answer.status == 201}
            )
        return _Answer(200, results)

    def _insert(self, sobject: str, fields: dict[str, Any]) -> str:
        table = self.records.setdefault(sobject, {})
        record_id = f"{_PREFIX.get(sobject, 'a00')}5g{len(table) + 1:010d}AAA"
        table[record_id] = fields
        return record_id


def _check(sobject: str, record: dict[str, Any]) -> _Answer | None:
    if sobject != "Lead":
        return None
    missing = [f for f in ("LastName", "Company") if not record.get(f)]
    if missing:
        return _error(
            400,
            "REQUIRED_FIELD_MISSING",
            f"Required fields are missing: [{', '.join(missing)}]",
            missing,
        )
    email = record.get("Email")
    if email and "@" not in str(email):
        # Salesforce quotes the value it refused in its message
        return _error(
            400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"]
        )
    return None


def _failure(code: str, message: str, fields: list[str]) -> dict[str, Any]:
    """One record's failure in a collection answer (``statusCode``, not ``errorCode``)."""
    return {
        "success": False,
        "errors": [{"statusCode": code, "message": message, "fields": fields}],
    }


def _error(status: int, code: str, message: str, fields: list[str] | None = None) -> _Answer:
    return _Answer(status, [{"message": message, "errorCode": code, "fields": fields or []}])


@dataclass
class _Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        fake: FakeSalesforce,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(address, handler)
        self.fake = fake
        self.context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # The handshake happens in the handler thread, not in the accept loop.
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(tls)
        return tls, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or drop connections are expected here


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        answer = self.server.fake.handle(self.command, self.path, dict(self.headers.items()), raw)
        if answer.drop:
            self.close_connection = True
            self.request.shutdown(socket.SHUT_RDWR)
            return
        payload = b"" if answer.body is None else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        if payload:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve
