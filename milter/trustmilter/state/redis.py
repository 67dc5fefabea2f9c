"""The shared state store for a fleet of MTAs: one Redis server, one view.

`RedisStore(url, key_prefix, timeout)` talks to Redis through the `redis`
package (its connection pool is thread-safe; every socket operation is
bounded by `timeout`; no retries, so a dead server costs one timeout, not
several). Keys, all under `key_prefix`:

- ``<prefix>rate:<key>``: a sorted set of events, scored by their time.
  A hit is one Lua script (EVALSHA, loaded again if the server forgot it),
  which Redis runs atomically: ZREMRANGEBYSCORE drops events older than the
  window, ZADD adds this one under a unique member, ZCARD counts, PEXPIRE
  lets the whole key vanish one window after its last hit. No other client
  runs between those steps, so N concurrent hits from any number of hosts
  get 1..N exactly once. Semantics as in `memory.py`.
- ``<prefix>rep:<sender>``: a hash (releases, last_release, reasons as a
  JSON list), updated by one Lua script too, and ``<prefix>reps``: the set
  of senders that have one, so `reputations()` never scans the keyspace.
- ``<prefix>spam:<sender>``: the spam marks (marks, last_mark, reasons),
  and ``<prefix>spams``: the senders that have them. One Lua script counts
  a mark and deletes the sender's release hash (a mark cancels what
  releases taught); each hash expires when its own direction lapses.
- ``<prefix>bounce:<recipient>``: a hard bounce as a JSON string, merged
  with the next report by one Lua script and expiring with the record
  (PXAT), and ``<prefix>bounces``: a sorted set of recipients scored by
  their expiry, trimmed whenever the list is read.
- ``<prefix>sent``: the messages we sent, a sorted set of Message-ID digests
  scored by their expiry, and ``<prefix>sent:records``: a hash of their
  records (JSON). One Lua script records a message and trims both: expired
  records (a batch at a time) and the earliest expiring beyond
  `max_entries`.
- ``<prefix>applied:<token>``: set (for two days) by the ``replay_``
  variants of add_release, add_spam_mark and add_bounce in the same script
  as the write, so a write that `ResilientStore` journaled after a timeout
  — which the server may still have run — is applied once however often it
  is sent (state/journal.py). ``replay_hit`` needs no marker: the token is
  the event's member, and a sorted set holds a member once. Nor does
  `remember_sent`: it sets a digest's score and record, so the same record
  written twice is written once.

What it does not do: connect at construction: an unreachable server shows on
the first operation, where the caller's `state.on_error` decides.

DIAGNOSTICS: every failure raises `StateError` with one line naming the
server, never the password: ``redis 127.0.0.1:6379: connection refused``,
``redis 127.0.0.1:6379: timed out after 0.5 s``; a malformed URL raises it
at construction.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from trustmilter.state.base import (
    HardBounce,
    Reputation,
    SentMessage,
    StateError,
    decode_bounce,
    decode_sent,
)
from trustmilter.state.memory import (
    combined,
    latest_first,
    live_sent,
    merge_reasons,
    normalize_sender,
    rank,
    unlearned,
)

# KEYS[1] the key's sorted set; ARGV: now, cutoff (= now - window), a unique
# member, the window in milliseconds. Events after the cutoff count (ZCARD
# after the trim), this one included.
HIT_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
local count = redis.call('ZCARD', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return count
"""

# Marks a write's token applied (ResilientStore's replay_* calls): two days,
# far longer than any retry of a journal that is still in memory.
APPLIED_TTL_MS = 2 * 24 * 3600 * 1000


def _once(marker: str, unchanged: str) -> str:
    """Lua that ends the script with `unchanged` when the key `marker` (a
    replay's ``applied:<token>``, nil for a plain write) is set already: the
    write was applied before and its answer lost. Else it sets the marker
    (for ARGV[5] ms) in the same atomic step as the write that follows."""
    return (
        f"if {marker} and not redis.call('SET', {marker}, '1', 'NX', 'PX', ARGV[5]) then\n"
        f"  return {unchanged}\n"
        "end\n"
    )


# The hash KEYS[1] counts one more event in field COUNT, stamped LAST; ARGV:
# sender, now, the lapse cutoff and the lapse in seconds ('' and '' when it
# never lapses), the marker's TTL in ms (see `_once`), then the new reasons.
# A hash whose last event is at or before the cutoff has lapsed and starts
# afresh. The later of the stored and the new time stays (an event merged
# back after an outage may be older than the stored one) and the hash
# expires one lapse after it. Leaves `count`, `encoded` (the reasons, a JSON
# list) and `last` (the time kept, as the string it was stored as) for the
# script's end. cjson encodes an empty table as {}, so an empty list is
# written as the literal [].
_COUNT_ONE = """
if ARGV[3] ~= '' then
  local stamped = tonumber(redis.call('HGET', KEYS[1], 'LAST') or '')
  if stamped and stamped <= tonumber(ARGV[3]) then redis.call('DEL', KEYS[1]) end
end
local last = ARGV[2]
local stored_last = redis.call('HGET', KEYS[1], 'LAST')
if stored_last and tonumber(stored_last) > tonumber(last) then last = stored_last end
local count = redis.call('HINCRBY', KEYS[1], 'COUNT', 1)
local stored = redis.call('HGET', KEYS[1], 'reasons')
local reasons, seen = {}, {}
if stored then
  for _, reason in ipairs(cjson.decode(stored)) do
    if not seen[reason] then seen[reason] = true; table.insert(reasons, reason) end
  end
end
for i = 6, #ARGV do
  local reason = ARGV[i]
  if reason ~= '' and not seen[reason] then seen[reason] = true; table.insert(reasons, reason) end
end
local encoded = '[]'
if #reasons > 0 then encoded = cjson.encode(reasons) end
redis.call('HSET', KEYS[1], 'LAST', last, 'reasons', encoded)
if ARGV[4] ~= '' then
  local expires = string.format('%.0f', math.ceil((tonumber(last) + tonumber(ARGV[4])) * 1000))
  redis.call('PEXPIREAT', KEYS[1], expires)
else redis.call('PERSIST', KEYS[1]) end
redis.call('SADD', KEYS[2], ARGV[1])
"""


def _counting(count_field: str, last_field: str) -> str:
    """`_COUNT_ONE` for one half of a sender's record."""
    return _COUNT_ONE.replace("COUNT", count_field).replace("LAST", last_field)


# KEYS[1] the sender's release hash, KEYS[2] its index set, KEYS[3] the
# sender's spam-mark hash (read only), KEYS[4] (replay only) the marker of the
# write's token. Returns {releases, reasons as a JSON list, last release, the
# spam-mark hash as a flat list}; a replay applied before returns the hash as
# it stands.
RELEASE_SCRIPT = (
    _once("KEYS[4]", "{redis.call('HGET', KEYS[1], 'releases') or '0',"
                     " redis.call('HGET', KEYS[1], 'reasons') or '[]',"
                     " redis.call('HGET', KEYS[1], 'last_release') or ARGV[2],"
                     " redis.call('HGETALL', KEYS[3])}")
    + _counting("releases", "last_release")
    + "return {count, encoded, last, redis.call('HGETALL', KEYS[3])}\n"
)

# KEYS[1] the sender's spam-mark hash, KEYS[2] its index set, KEYS[3] the
# sender's release hash, KEYS[4] that index: a spam mark cancels what
# releases taught, in the same atomic step; KEYS[5] (replay only) the marker
# of the write's token. Returns {marks, reasons as a JSON list, last mark};
# a replay applied before returns the hash as it stands.
SPAM_MARK_SCRIPT = (
    _once("KEYS[5]", "{redis.call('HGET', KEYS[1], 'marks') or '0',"
                     " redis.call('HGET', KEYS[1], 'reasons') or '[]',"
                     " redis.call('HGET', KEYS[1], 'last_mark') or ARGV[2]}")
    + _counting("marks", "last_mark")
    + "redis.call('DEL', KEYS[3])\n"
    + "redis.call('SREM', KEYS[4], ARGV[1])\n"
    + "return {count, encoded, last}\n"
)


# KEYS[1] the recipient's record, KEYS[2] the index, KEYS[3] (replay only) the
# marker of the write's token; ARGV: recipient, the new report as JSON, its
# expiry in epoch milliseconds, the marker's TTL in ms. Returns the merged
# JSON (semantics of memory.merge_bounce: an expired record is gone already;
# a report older than the record, merged after an outage, only adds its
# count and first sighting). A marker already set: applied before, unchanged.
BOUNCE_SCRIPT = """
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then
  return redis.call('GET', KEYS[1]) or ARGV[2]
end
local new = cjson.decode(ARGV[2])
local stored = redis.call('GET', KEYS[1])
if stored then
  local old = cjson.decode(stored)
  local first = old.first_seen
  if tonumber(new.first_seen) < tonumber(first) then first = new.first_seen end
  if tonumber(old.last_seen) > tonumber(new.last_seen) then
    old.bounces = (old.bounces or 0) + 1
    old.first_seen = first
    local kept = cjson.encode(old)
    redis.call('SET', KEYS[1], kept, 'KEEPTTL')
    return kept
  end
  new.bounces = (old.bounces or 0) + 1
  new.first_seen = first
end
local encoded = cjson.encode(new)
redis.call('SET', KEYS[1], encoded, 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return encoded
"""


# KEYS[1] the index (digests scored by expiry, epoch ms), KEYS[2] the records
# (digest -> JSON); ARGV: digest, record, its expiry in ms, now in ms,
# max_entries, batch. Drops up to a batch of expired records, then the
# earliest expiring beyond max_entries (up to a batch too: a lowered
# max_entries is reached over the next few records, each write stays short).
SENT_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local batch = tonumber(ARGV[6])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, batch)
if #expired > 0 then
  redis.call('ZREM', KEYS[1], unpack(expired))
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], math.min(over, batch))
  for i = 1, #popped, 2 do redis.call('HDEL', KEYS[2], popped[i]) end
end
return 0
"""
# Records one write drops at most (Lua's unpack has a stack limit near 8000).
SENT_BATCH = 1000


class RedisStore:
    """A StateStore on a Redis server; safe for many threads, processes and hosts."""

    def __init__(self, url: str, key_prefix: str, timeout: float) -> None:
        self.prefix = key_prefix
        self.timeout = timeout
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # Retry(0): the policy's on_error decides what an outage means;
                # retrying here would only multiply the time a session waits.
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        except ValueError as exc:
            raise StateError(f"redis URL {_redact(url)}: {exc}") from exc
        params = self._client.connection_pool.connection_kwargs
        self.location = (
            f"unix:{params['path']}" if "path" in params else f"{params['host']}:{params['port']}"
        )
        self._hit = self._client.register_script(HIT_SCRIPT)
        self._release = self._client.register_script(RELEASE_SCRIPT)
        self._spam_mark = self._client.register_script(SPAM_MARK_SCRIPT)
        self._bounce = self._client.register_script(BOUNCE_SCRIPT)
        self._sent = self._client.register_script(SENT_SCRIPT)

    # ---- counting ---------------------------------------------------------

    def hit(self, key: str, now: float, window: float) -> int:
        """Record one event for `key` at `now`; the events in its window, this one included."""
        # Unique member: two hits at one instant both count.
        return self._add_event(key, now, window, f"{now!r}:{uuid.uuid4().hex}")

    def replay_hit(self, token: str, key: str, now: float, window: float) -> int:
        """`hit` once per `token`: the token is the event's member, so a second
        application (a write whose answer was lost, merged again) adds nothing.
        `now` may lie in the past: the event is scored at its own time."""
        return self._add_event(key, now, window, token)

    def _add_event(self, key: str, now: float, window: float, member: str) -> int:
        window_ms = max(1, math.ceil(window * 1000))
        args: list[str | int] = [repr(now), repr(now - window), member, window_ms]
        with self._errors():
            count = self._hit(keys=[self._rate_key(key)], args=args)
        return int(count)

    def count(self, key: str, now: float, window: float) -> int:
        """The events for `key` after ``now - window``, recording nothing."""
        with self._errors():
            count = self._client.zcount(self._rate_key(key), f"({now - window!r}", "+inf")
        return int(count)

    # ---- reputation -------------------------------------------------------

    def add_release(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one release of mail from `sender`; its reputation afterwards.
        With a finite `lapse` the hash expires by itself when it lapses."""
        return self._add_release(None, sender, reasons, now, lapse)

    def replay_add_release(
        self,
        token: str,
        sender: str,
        reasons: tuple[str, ...],
        now: float,
        lapse: float = math.inf,
    ) -> Reputation:
        """`add_release` once per `token` (a marker key remembers it for two days)."""
        return self._add_release(token, sender, reasons, now, lapse)

    def _add_release(
        self, token: str | None, sender: str, reasons: tuple[str, ...], now: float, lapse: float
    ) -> Reputation:
        address = normalize_sender(sender)
        if not address:
            return unlearned(now)
        keys = [self._rep_key(address), self._index_key(), self._spam_key(address)]
        if token is not None:
            keys.append(self._applied_key(token))
        with self._errors():
            releases, encoded, last, marks = self._release(
                keys=keys, args=[address, *_lapse_args(now, lapse), APPLIED_TTL_MS, *reasons]
            )
        new = Reputation(
            address, int(releases), float(last), merge_reasons(json.loads(encoded), ())
        )
        return combined(new, _spam_marks(address, _pairs(marks))) or new

    def add_spam_mark(
        self, sender: str, reasons: tuple[str, ...], now: float, lapse: float = math.inf
    ) -> Reputation:
        """Count one message of `sender` deleted as spam; its release hash goes in the
        same script. With a finite `lapse` the marks expire by themselves when they lapse."""
        return self._add_spam_mark(None, sender, reasons, now, lapse)

    def replay_add_spam_mark(
        self,
        token: str,
        sender: str,
        reasons: tuple[str, ...],
        now: float,
        lapse: float = math.inf,
    ) -> Reputation:
        """`add_spam_mark` once per `token` (a marker key remembers it for two days)."""
        return self._add_spam_mark(token, sender, reasons, now, lapse)

    def _add_spam_mark(
        self, token: str | None, sender: str, reasons: tuple[str, ...], now: float, lapse: float
    ) -> Reputation:
        address = normalize_sender(sender)
        if not address:
            return unlearned(now)
        keys = [self._spam_key(address), self._spam_index_key(),
                self._rep_key(address), self._index_key()]
        if token is not None:
            keys.append(self._applied_key(token))
        with self._errors():
            marks, encoded, last = self._spam_mark(
                keys=keys, args=[address, *_lapse_args(now, lapse), APPLIED_TTL_MS, *reasons]
            )
        return Reputation(address, 0, 0.0, spam_marks=int(marks), last_spam_mark=float(last),
                          spam_reasons=merge_reasons(json.loads(encoded), ()))

    def reputation(self, sender: str) -> Reputation | None:
        """What is known about `sender` (both directions), or None."""
        address = normalize_sender(sender)
        with self._errors():
            pipe = self._client.pipeline(transaction=True)  # MULTI: one moment for both
            pipe.hgetall(self._rep_key(address))
            pipe.hgetall(self._spam_key(address))
            released, marked = pipe.execute()
        return combined(_reputation(address, _strings(released)),
                        _spam_marks(address, _strings(marked)))

    def reputations(self) -> list[Reputation]:
        """Every sender with releases or spam marks, most releases first."""
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.smembers(self._index_key())
            pipe.smembers(self._spam_index_key())
            indexed, marked_index = pipe.execute()
            senders = sorted({str(s) for s in indexed} | {str(s) for s in marked_index})
            pipe = self._client.pipeline(transaction=False)
            for sender in senders:
                pipe.hgetall(self._rep_key(sender))
                pipe.hgetall(self._spam_key(sender))
            hashes: list[dict[str, str]] = pipe.execute()
        released = [_reputation(s, _strings(h)) for s, h in zip(senders, hashes[::2], strict=True)]
        marked = [_spam_marks(s, _strings(h)) for s, h in zip(senders, hashes[1::2], strict=True)]
        # Hashes that expired (lapsed): drop them from their index too.
        gone = [s for s, rep in zip(senders, released, strict=True) if rep is None]
        gone_marks = [s for s, rep in zip(senders, marked, strict=True) if rep is None]
        if gone or gone_marks:
            with self._errors():
                pipe = self._client.pipeline(transaction=False)
                if gone:
                    pipe.srem(self._index_key(), *gone)
                if gone_marks:
                    pipe.srem(self._spam_index_key(), *gone_marks)
                pipe.execute()
        found = (combined(r, m) for r, m in zip(released, marked, strict=True))
        return rank(rep for rep in found if rep is not None)

    def forget(self, sender: str) -> bool:
        """Drop what was learned about `sender`, both directions; True if there was anything."""
        address = normalize_sender(sender)
        with self._errors():
            pipe = self._client.pipeline(transaction=True)  # MULTI: hashes and indexes together
            pipe.delete(self._rep_key(address), self._spam_key(address))
            pipe.srem(self._index_key(), address)
            pipe.srem(self._spam_index_key(), address)
            deleted, _, _ = pipe.execute()
        return int(deleted) > 0

    # ---- hard bounces ------------------------------------------------------

    def add_bounce(self, bounce: HardBounce) -> HardBounce:
        """Record one report; the merged record."""
        return self._add_bounce(None, bounce)

    def replay_add_bounce(self, token: str, bounce: HardBounce) -> HardBounce:
        """`add_bounce` once per `token` (a marker key remembers it for two days)."""
        return self._add_bounce(token, bounce)

    def _add_bounce(self, token: str | None, bounce: HardBounce) -> HardBounce:
        address = normalize_sender(bounce.recipient)
        report = replace(bounce, recipient=address, bounces=1)
        expires_ms = math.ceil(report.expires * 1000)
        # Times as strings: Lua's cjson would round numbers to 14 digits.
        fields = {k: repr(v) if isinstance(v, float) else v for k, v in report.as_json().items()}
        keys = [self._bounce_key(address), self._bounce_index_key()]
        if token is not None:
            keys.append(self._applied_key(token))
        with self._errors():
            encoded = self._bounce(
                keys=keys, args=[address, json.dumps(fields), expires_ms, APPLIED_TTL_MS]
            )
        return _bounce(encoded)

    def hard_bounces(self, now: float) -> list[HardBounce]:
        """The records not expired at `now`, latest report first."""
        with self._errors():
            index = self._bounce_index_key()
            self._client.zremrangebyscore(index, "-inf", math.floor(now * 1000))
            recipients = [str(r) for r in self._client.zrange(index, 0, -1)]
            stored = self._client.mget([self._bounce_key(r) for r in recipients]) if (
                recipients) else []
        return latest_first((_bounce(str(item)) for item in stored if item), now)

    def forget_bounce(self, recipient: str) -> bool:
        """Drop the record of `recipient`; True if there was one."""
        address = normalize_sender(recipient)
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._bounce_key(address))
            pipe.zrem(self._bounce_index_key(), address)
            deleted, _ = pipe.execute()
        return int(deleted) > 0

    # ---- the messages we sent -------------------------------------------------

    def remember_sent(self, sent: SentMessage, max_entries: int) -> None:
        """Record one message we sent; expired records and the oldest beyond
        `max_entries` go, in the same atomic script."""
        # Times as strings: Lua's cjson would round numbers to 14 digits.
        fields = {k: repr(v) if isinstance(v, float) else v for k, v in sent.as_json().items()}
        with self._errors():
            self._sent(
                keys=[self._sent_index_key(), self._sent_records_key()],
                args=[sent.digest, json.dumps(fields), math.ceil(sent.expires * 1000),
                      math.floor(sent.sent_at * 1000), max_entries, SENT_BATCH],
            )

    def sent_messages(self, digests: Sequence[str], now: float) -> list[SentMessage]:
        """The records among `digests` not expired at `now`, in the order asked."""
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return []
        with self._errors():
            stored = self._client.hmget(self._sent_records_key(), wanted)
        return live_sent((_sent(str(item)) if item else None for item in stored), now)

    def close(self) -> None:
        """Close the connection pool."""
        with contextlib.suppress(redis.RedisError, OSError):
            self._client.close()

    # ---- keys and errors ----------------------------------------------------

    def _rate_key(self, key: str) -> str:
        return f"{self.prefix}rate:{key}"

    def _rep_key(self, address: str) -> str:
        return f"{self.prefix}rep:{address}"

    def _index_key(self) -> str:
        return f"{self.prefix}reps"

    def _spam_key(self, address: str) -> str:
        """The sender's spam marks."""
        return f"{self.prefix}spam:{address}"

    def _spam_index_key(self) -> str:
        """The senders with spam marks."""
        return f"{self.prefix}spams"

    def _bounce_key(self, address: str) -> str:
        """The recipient's record."""
        return f"{self.prefix}bounce:{address}"

    def _bounce_index_key(self) -> str:
        """The recipients with a record, scored by expiry (epoch ms)."""
        return f"{self.prefix}bounces"

    def _sent_index_key(self) -> str:
        """The digests of the messages we sent, scored by expiry (epoch ms)."""
        return f"{self.prefix}sent"

    def _sent_records_key(self) -> str:
        """Digest -> the record of the message we sent."""
        return f"{self.prefix}sent:records"

    def _applied_key(self, token: str) -> str:
        """The marker of a journaled write that has reached the server."""
        return f"{self.prefix}applied:{token}"

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn redis and OS errors into a one-line StateError naming the server."""
        try:
            yield
        except redis.TimeoutError as exc:
            raise StateError(f"redis {self.location}: timed out after {self.timeout:g} s") from exc
        except (redis.RedisError, OSError) as exc:
            raise StateError(f"redis {self.location}: {_describe(exc)}") from exc


def _reputation(address: str, fields: dict[str, str]) -> Reputation | None:
    """A Reputation from its hash; None for a hash that is not there (or half written)."""
    if not fields or "releases" not in fields:
        return None
    return Reputation(
        sender=address,
        releases=int(fields["releases"]),
        last_release=float(fields.get("last_release", 0.0)),
        reasons=tuple(json.loads(fields.get("reasons", "[]"))),
    )


def _spam_marks(address: str, fields: dict[str, str]) -> Reputation | None:
    """The spam-mark half from its hash; None for a hash that is not there."""
    if not fields or "marks" not in fields:
        return None
    return Reputation(
        sender=address,
        releases=0,
        last_release=0.0,
        spam_marks=int(fields["marks"]),
        last_spam_mark=float(fields.get("last_mark", 0.0)),
        spam_reasons=tuple(json.loads(fields.get("reasons", "[]"))),
    )


def _lapse_args(now: float, lapse: float) -> tuple[str, str, str]:
    """now, the lapse cutoff and the lapse in seconds, as the count scripts take them
    ('' and '' when nothing lapses; the script reckons the expiry from the time it keeps)."""
    if not math.isfinite(lapse):
        return repr(now), "", ""
    return repr(now), repr(now - lapse), repr(lapse)


def _strings(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {str(name): str(value) for name, value in fields.items()}


def _pairs(flat: list[object]) -> dict[str, str]:
    """A hash as Lua's HGETALL returns it (name, value, name, value ...) as a dict."""
    return {str(name): str(value) for name, value in zip(flat[::2], flat[1::2], strict=True)}


def _bounce(encoded: str) -> HardBounce:
    """A record as the bounce script keeps it (times as strings); StateError if unreadable."""
    try:
        fields = json.loads(encoded)
    except ValueError as exc:
        raise StateError(f"a stored hard-bounce record cannot be read: {exc}") from exc
    return decode_bounce(fields)


def _sent(encoded: str) -> SentMessage:
    """A record as the sent script keeps it (times as strings); StateError if unreadable."""
    try:
        fields = json.loads(encoded)
    except ValueError as exc:
        raise StateError(f"a stored sent-message record cannot be read: {exc}") from exc
    return decode_sent(fields)


def _describe(exc: BaseException) -> str:
    """The OS's words for a socket error ("connection refused"), else the first line."""
    for cause in (exc, exc.__cause__, exc.__context__):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    """`url` without its password, fit for a log line."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"
