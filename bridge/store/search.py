"""The search index: keyed hashes of each lead's email and phone.

Operators look leads up by email or phone; scanning 100k payloads for a value
is slow, and a plain-text index column would be one more copy of personal
data. So each lead row carries ``email_hash`` and ``phone_hash``: a 16-byte
keyed BLAKE2b MAC of kind + ":" + the normalised value, looked up by hashing
the query the same way. PostgreSQL writes them at intake, in the same
statement as the lead, and indexes the two columns. SQLite leaves them out of
intake's commits: the writer computes them from the stored payloads in sorted
batches a second or so behind intake (deferred while intake keeps it busy),
into the row and into ``lead_search`` (hash, lead id); a search first indexes
whatever is left (:meth:`bridge.store.sqlite.SQLiteStore.index_now`), then
reads ``lead_search``. The values come from the provider's ``data.email`` and
``data.phone`` (:func:`search_values`).

Normalisation: an email is stripped and lower-cased; a phone keeps its digits
only (``+1 (555) 010-0000`` and ``15550100000`` match).

The key. ``storage.search_key`` (a secret of at least 16 characters, usually
``${LEAD_BRIDGE_SEARCH_KEY}``) when set: then a copy of the database alone does
not tell whether a given address is in it. Otherwise a random key is generated
once and stored in the database's ``settings`` table: the index still holds no
address in clear, but anyone with the database can test guesses. The key's
fingerprint is stored too; when the key changes, the store rebuilds the index
when it opens.

Erasure and retention: erasing a lead deletes its row and so its hashes;
retention, which keeps the id row but drops the payload, clears both hashes
in the same statement (:meth:`bridge.store.base.Store.clear_search_index` does it
for any set of lead ids).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

import orjson

HASH_BYTES = 16
MIN_KEY_CHARS = 16
# settings-table rows
KEY_SETTING = "search_key"  # the generated key (hex), absent when configured
INDEXED_SETTING = "search_index_key_id"  # fingerprint of the key the index was built with
# SQLite: leads up to this rowid are indexed (hashes in their row and in lead_search).
INDEXED_ROWID = "search_indexed_rowid"


# Every ASCII byte but the ten digits (normalise_phone keeps ASCII digits only).
_ASCII_NON_DIGITS = bytes(i for i in range(128) if not 48 <= i <= 57)


def normalise_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    return text or None


def normalise_phone(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    digits = "".join(c for c in value if c.isdigit() and c.isascii())
    return digits or None


def search_values(lead: Any) -> tuple[Any, Any]:
    """The raw (email, phone) of a parsed lead, from ``data`` as the provider sends it."""
    data = lead.get("data") if isinstance(lead, dict) else None
    if not isinstance(data, dict):
        return None, None
    return data.get("email"), data.get("phone")


def parse_payload(payload: str | None) -> Any:
    """A stored payload parsed for hashing (orjson; integers beyond 64 bits may
    come back as floats, which does not matter for emails and phones)."""
    if payload is None:
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:  # NaN, Infinity, huge integers: what only the standard library reads
            return json.loads(payload)
        except ValueError:
            return None


class SearchHasher:
    """Hashes emails and phones with one key; cheap enough for intake's hot path."""

    def __init__(self, key: bytes) -> None:
        # Names the key and the hash function: either changing rebuilds the index.
        self.fingerprint = hmac.new(
            key, b"lead-bridge search key id/blake2b-16", "sha256"
        ).hexdigest()[:16]
        # Keyed BLAKE2b (a MAC by design, RFC 7693) rather than HMAC-SHA256: one
        # call of CPython's own implementation, several times cheaper per value
        # than HMAC through OpenSSL 3 (measured), and this runs on intake's path.
        self._key = hashlib.blake2b(key, digest_size=64).digest()
        # The keyed state after each kind's prefix, copied per value: a copy
        # skips the key block's compression a fresh keyed hash starts with.
        self._email = self._keyed(b"email:")
        self._phone = self._keyed(b"phone:")

    def _keyed(self, kind: bytes) -> hashlib.blake2b:
        return hashlib.blake2b(kind, key=self._key, digest_size=HASH_BYTES)

    def email(self, value: Any) -> bytes | None:
        """The index hash of an email as given (normalised here), or None."""
        text = normalise_email(value)
        if text is None:
            return None
        state = self._email.copy()
        state.update(text.encode("utf-8", "surrogatepass"))
        return state.digest()

    def phone(self, value: Any) -> bytes | None:
        """The index hash of a phone number as given (digits only), or None."""
        if isinstance(value, str) and value.isascii():
            # normalise_phone's digits, the cheap way for ASCII text
            digits = value.encode("ascii").translate(None, _ASCII_NON_DIGITS)
        else:
            text = normalise_phone(value)
            digits = b"" if text is None else text.encode("ascii")
        if not digits:
            return None
        state = self._phone.copy()
        state.update(digits)
        return state.digest()

    def lead(self, lead: Any) -> tuple[bytes | None, bytes | None]:
        """(email_hash, phone_hash) of a parsed lead."""
        email, phone = search_values(lead)
        return self.email(email), self.phone(phone)

    def payload(self, payload: str | None) -> tuple[bytes | None, bytes | None]:
        """(email_hash, phone_hash) of a stored payload (JSON text)."""
        return self.lead(parse_payload(payload))


def configured_key(secret: str) -> bytes:
    """The key for a configured ``storage.search_key`` (any length ≥ 16)."""
    return hashlib.sha256(b"lead-bridge search key\x00" + secret.encode()).digest()


def new_stored_key() -> str:
    """A fresh random key, as stored in the settings table (hex)."""
    return secrets.token_hex(32)


def stored_key(text: str) -> bytes:
    return bytes.fromhex(text)


def search_key_plan(conn: Any, configured: str | None) -> tuple[bytes, bool]:
    """The key to use and whether the index must be rebuilt with it, from the
    ``settings`` table (a DB-API connection in autocommit mode with ``?``
    placeholders: SQLite's, or a small adapter). A generated key is inserted
    once; concurrent starters all read back the one that won."""

    def get(name: str) -> str | None:
        row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    if configured is not None:
        key = configured_key(configured)
        # The key lives in the configuration now: do not keep a generated one.
        conn.execute("DELETE FROM settings WHERE name = ?", (KEY_SETTING,))
    else:
        text = get(KEY_SETTING)
        if text is None:
            conn.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (KEY_SETTING, new_stored_key()),
            )
            text = get(KEY_SETTING)
        assert text is not None
        key = stored_key(text)
    return key, get(INDEXED_SETTING) != SearchHasher(key).fingerprint


async def search_key_plan_async(settings: Any, configured: str | None) -> tuple[bytes, bool]:
    """:func:`search_key_plan` for an async backend; ``settings`` has async
    ``get(name)``, ``put_new(name, value)`` (insert unless present) and ``delete(name)``."""
    if configured is not None:
        key = configured_key(configured)
        await settings.delete(KEY_SETTING)
    else:
        text = await settings.get(KEY_SETTING)
        if text is None:
            await settings.put_new(KEY_SETTING, new_stored_key())
            text = await settings.get(KEY_SETTING)
        assert text is not None
        key = stored_key(text)
    return key, await settings.get(INDEXED_SETTING) != SearchHasher(key).fingerprint
