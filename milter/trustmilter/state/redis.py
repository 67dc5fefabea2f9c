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
- ``<prefix>bounce:<recipient>``: a hard bounce as a JSON string, merged
  with the next report by one Lua script and expiring with the record
  (PXAT), and ``<prefix>bounces``: a sorted set of recipients scored by
  their expiry, trimmed whenever the list is read.
- ``<prefix>applied:<token>``: set (for two days) by the ``replay_``
  variants of add_release and add_bounce in the same script as the write,
  so a write that `ResilientStore` journaled after a timeout — which the
  server may still have run — is applied once however often it is sent
  (state/journal.py). ``replay_hit`` needs no marker: the token is the
  event's member, and a sorted set holds a member once.

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
from collections.abc import Iterator
from dataclasses import replace

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from trustmilter.state.base import HardBounce, Reputation, StateError, decode_bounce
from trustmilter.state.memory import (
    latest_first,
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

# KEYS[1] the sender's hash, KEYS[2] the index set, KEYS[3] (replay only) the
# marker of the write's token; ARGV: sender, now, the lapse cutoff and the
# lapse in seconds ('' and '' when it never lapses), the marker's TTL in ms,
# then the new reasons. A marker already set means this write was applied
# (its answer was lost): the hash is reported unchanged. A hash whose last
# release is at or before the cutoff has lapsed and starts afresh; the later
# release time stays (a merged release may be older than the stored one) and
# the hash expires one lapse after it. Returns {releases, reasons as a JSON
# list, last release}. cjson encodes an empty table as {}, so an empty list
# is written as the literal [].
RELEASE_SCRIPT = """
if KEYS[3] and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then
  return {redis.call('HGET', KEYS[1], 'releases') or '0',
          redis.call('HGET', KEYS[1], 'reasons') or '[]',
          redis.call('HGET', KEYS[1], 'last_release') or ARGV[2]}
end
if ARGV[3] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_release') or '')
  if last and last <= tonumber(ARGV[3]) then redis.call('DEL', KEYS[1]) end
end
local last = ARGV[2]
local stored_last = redis.call('HGET', KEYS[1], 'last_release')
if stored_last and tonumber(stored_last) > tonumber(last) then last = stored_last end
local releases = redis.call('HINCRBY', KEYS[1], 'releases', 1)
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
redis.call('HSET', KEYS[1], 'last_release', last, 'reasons', encoded)
if ARGV[4] ~= '' then
  local expires = string.format('%.0f', math.ceil((tonumber(last) + tonumber(ARGV[4])) * 1000))
  redis.call('PEXPIREAT', KEYS[1], expires)
else redis.call('PERSIST', KEYS[1]) end
redis.call('SADD', KEYS[2], ARGV[1])
return {releases, encoded, last}
"""


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
        self._bounce = self._client.register_script(BOUNCE_SCRIPT)

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
        finite = math.isfinite(lapse)
        cutoff = repr(now - lapse) if finite else ""
        keys = [self._rep_key(address), self._index_key()]
        if token is not None:
            keys.append(self._applied_key(token))
        with self._errors():
            releases, encoded, last = self._release(
                keys=keys,
                args=[address, repr(now), cutoff, repr(lapse) if finite else "",
                      APPLIED_TTL_MS, *reasons],
            )
        return Reputation(
            address, int(releases), float(last), merge_reasons(json.loads(encoded), ())
        )

    def reputation(self, sender: str) -> Reputation | None:
        """What is known about `sender`, or None."""
        address = normalize_sender(sender)
        with self._errors():
            fields = self._client.hgetall(self._rep_key(address))
        return _reputation(address, {str(name): str(value) for name, value in fields.items()})

    def reputations(self) -> list[Reputation]:
        """Every sender with a reputation, most releases first."""
        with self._errors():
            senders = sorted(str(sender) for sender in self._client.smembers(self._index_key()))
            pipe = self._client.pipeline(transaction=False)
            for sender in senders:
                pipe.hgetall(self._rep_key(sender))
            hashes: list[dict[str, str]] = pipe.execute()
        found = [_reputation(*pair) for pair in zip(senders, hashes, strict=True)]
        gone = [sender for sender, rep in zip(senders, found, strict=True) if rep is None]
        if gone:  # hashes that expired (lapsed): drop them from the index too
            with self._errors():
                self._client.srem(self._index_key(), *gone)
        return rank(rep for rep in found if rep is not None)

    def forget(self, sender: str) -> bool:
        """Drop what was learned about `sender`; True if there was anything."""
        address = normalize_sender(sender)
        with self._errors():
            pipe = self._client.pipeline(transaction=True)  # MULTI: hash and index together
            pipe.delete(self._rep_key(address))
            pipe.srem(self._index_key(), address)
            deleted, _ = pipe.execute()
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

    def _bounce_key(self, address: str) -> str:
        """The recipient's record."""
        return f"{self.prefix}bounce:{address}"

    def _bounce_index_key(self) -> str:
        """The recipients with a record, scored by expiry (epoch ms)."""
        return f"{self.prefix}bounces"

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


def _bounce(encoded: str) -> HardBounce:
    """A record as the bounce script keeps it (times as strings); StateError if unreadable."""
    try:
        fields = json.loads(encoded)
    except ValueError as exc:
        raise StateError(f"a stored hard-bounce record cannot be read: {exc}") from exc
    return decode_bounce(fields)


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
