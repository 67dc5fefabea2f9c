"""Shared pytest fixtures. Keep each group small and say what it is for."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trustmilter.config.dns import DnsConfig
from trustmilter.lookup.resolver import NetworkResolver
from trustmilter.testing.dnsserver import DnsTestServer

# ---- DNS: a real server on 127.0.0.1 and a resolver pointed at it ---------


@pytest.fixture(scope="session")
def _dns_test_server() -> Iterator[DnsTestServer]:
    """One server for the whole session: binding per test would be slow."""
    server = DnsTestServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def dns_server(_dns_test_server: DnsTestServer) -> Iterator[DnsTestServer]:
    """The test DNS server with an empty zone and an empty query log."""
    _dns_test_server.reset()
    yield _dns_test_server
    _dns_test_server.reset()


@pytest.fixture
def resolver(dns_server: DnsTestServer) -> NetworkResolver:
    """A NetworkResolver that asks only the test server, without a cache."""
    nameservers = (dns_server.nameserver,)
    return NetworkResolver(DnsConfig(nameservers, timeout=0.5, lifetime=1.0, cache_size=0))


# ---- Postfix: a private real instance on 127.0.0.1 (testing/postfix.py) ----
# Missing Postfix skips these tests on a developer's machine but fails under
# CI=true, where packaging/install.sh --test must have installed it.
# (Imports here, not at the top, keep this section a pure append.)

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from trustmilter.testing.postfix import PostfixInstance, postfix_unavailable  # noqa: E402


@pytest.fixture(scope="session")
def postfix_installed() -> None:
    """Skip (or under CI, fail) when this machine cannot run a private Postfix."""
    reason = postfix_unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Postfix tests: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postfix(postfix_installed: None) -> Iterator[PostfixInstance]:
    """One running instance per test module, no milter yet (tests reload it).

    Its directory is made with mkdtemp, not pytest's tmp_path: virtual(8)
    delivers as the postfix user, who cannot enter pytest's 0700 base dir.
    """
    workdir = Path(tempfile.mkdtemp(prefix="trustmilter-postfix-"))
    instance = PostfixInstance(workdir)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ---- State: memory, SQLite and a private real redis-server -----------------
# (testing/redisserver.py). A missing redis-server skips the Redis tests on a
# developer's machine but fails under CI=true, where packaging/install.sh
# --test must have installed it. `state_config` is parametrized over all
# three backends, so a test that takes it (or `state_store`) runs on each.
# (Imports here, not at the top, keep this section a pure append.)

import uuid  # noqa: E402

from trustmilter.config.state import StateConfig  # noqa: E402
from trustmilter.state.base import StateStore  # noqa: E402
from trustmilter.state.open import open_store  # noqa: E402
from trustmilter.testing.redisserver import RedisServer, redis_unavailable  # noqa: E402

STATE_BACKENDS = ("memory", "sqlite", "redis")


@pytest.fixture(scope="session")
def redis_installed() -> None:
    """Skip (or under CI, fail) when this machine has no redis-server."""
    reason = redis_unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Redis tests: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server(
    redis_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """One private server for the session; tests keep apart by key prefix, not FLUSHALL."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=STATE_BACKENDS)
def state_config(request: pytest.FixtureRequest, tmp_path: Path) -> StateConfig:
    """A StateConfig for each backend: a fresh SQLite file, a fresh Redis key prefix."""
    backend = request.param
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return StateConfig(
            backend="redis",
            redis_url=server.url,
            key_prefix=f"test:{uuid.uuid4().hex}:",
            timeout=5.0,
        )
    if backend == "sqlite":
        return StateConfig(backend="sqlite", sqlite_path=str(tmp_path / "state.sqlite3"), timeout=5.0)
    return StateConfig(backend="memory")


@pytest.fixture
def state_store(state_config: StateConfig) -> Iterator[StateStore]:
    """The store `state_config` names, closed after the test."""
    store = open_store(state_config)
    try:
        yield store
    finally:
        store.close()


# ---- Sendmail: a private real instance on 127.0.0.1 (testing/sendmail.py) --
# Debian's Sendmail, unpacked (testing/sendmailpkg.py) by packaging/install.sh
# --test, or here when that did not run. It is skipped only for a developer
# who is not root; under CI, or as root, a Sendmail that cannot run fails.
# (Imports here, not at the top, keep this section a pure append.)

from trustmilter.testing.sendmail import sendmail_unavailable  # noqa: E402
from trustmilter.testing.sendmailpkg import SendmailPackageError, fetch  # noqa: E402


@pytest.fixture(scope="session")
def sendmail_prefix() -> Path:
    """Where Debian's Sendmail is unpacked (fetched now if it is not yet)."""
    reason = sendmail_unavailable()
    if reason is None:
        try:
            return fetch()
        except (SendmailPackageError, OSError) as error:
            reason = f"cannot fetch Sendmail: {error}"
    if os.environ.get("CI") == "true" or os.geteuid() == 0:
        pytest.fail(f"the Sendmail tests must run here: {reason}", pytrace=False)
    pytest.skip(reason)


# ---- the installation's well-known paths, kept out of the tests ---------------
# Without --policy the commands read /etc/trustmilter/policy.yaml or
# ./policy.yaml (policy_search.py), and `trustmilter run` leaves a note in
# /run/trustmilter (runfile.py). A test must not read the policy of the
# machine it runs on, nor a daemon it did not start: no file is searched
# (tests that test the search set it themselves), and RUNTIME_DIRECTORY,
# which daemons started by tests inherit, points into a private directory.

from trustmilter import policy_search  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _no_installation_paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policy_search, "search_path", lambda cwd: ())
        patch.setenv("RUNTIME_DIRECTORY", str(tmp_path_factory.mktemp("run")))
        yield


# ---- trustmilter as uid 65534: for what must not run as root (the review page) ----
# testing/unprivileged.py copies the package and the venv's site-packages
# where that user can read them, wherever the checkout is, and finds an
# interpreter it can run. The tests that need it run as root (to switch
# user); elsewhere they skip, saying why. Under CI=true it never skips.

from trustmilter.testing.unprivileged import (  # noqa: E402
    Runtime,
    RuntimeUnavailable,
    prepare_runtime,
)


@pytest.fixture(scope="session")
def unprivileged_runtime() -> Iterator[Runtime]:
    """trustmilter runnable as uid 65534 (nobody), for the session."""
    reason = None
    if os.geteuid() != 0:
        reason = "starts trustmilter as uid 65534: the tests must run as root to switch user"
    else:
        root = Path(tempfile.mkdtemp(prefix="trustmilter-unprivileged-"))
        try:
            runtime = prepare_runtime(root)
        except (RuntimeUnavailable, OSError) as error:
            shutil.rmtree(root, ignore_errors=True)
            reason = str(error)
        else:
            try:
                yield runtime
            finally:
                shutil.rmtree(root, ignore_errors=True)
            return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run trustmilter as an unprivileged user: {reason}", pytrace=False)
    pytest.skip(reason)


# ---- Debian's Chromium and chromedriver (testing/browser.py) -----------------
# Missing: skipped on a developer's machine, a failure under CI=true, where
# packaging/install.sh --test must have installed them.

from trustmilter.testing.browser import browser_unavailable  # noqa: E402


@pytest.fixture(scope="module")
def browser_installed() -> None:
    """Skip (or under CI, fail) when Chromium and its driver are not installed."""
    reason = browser_unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests: {reason}", pytrace=False)
    pytest.skip(reason)
