"""Property tests of the Redis key builder: user ids (any text an API client may send) can
neither collide nor leave their prefix, and every key of one user hashes to one cluster slot."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from contract.redis_layout import (
    USER_KEY_KINDS,
    log_key_pattern,
    user_from_log_key,
    user_from_tag,
    user_keys,
)

# What JSON can carry into a str and encode as UTF-8: every code point but lone surrogates
# (the request parser refuses those, tests/test_hostile_input.py).
user_ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64)
tricky_ids = st.sampled_from(
    [
        "}",
        "{",
        "{u:",
        "}:seq",
        ":",
        "*",
        "?",
        "[a]",
        "\\",
        "\x00",
        "cosrec:{u:61}:seq",
        "{u:61}",
        "a}b{c",
        "ü",
        "\U0001f600",
    ]
)
any_id = user_ids | tricky_ids
prefixes = st.from_regex(r"[A-Za-z0-9_.-]{1,32}", fullmatch=True)
KEY_SHAPE = re.compile(r"\{u:(?:[0-9a-f]{2})+\}:(" + "|".join(USER_KEY_KINDS) + ")")


@settings(max_examples=300, deadline=None)
@given(prefix=prefixes, first=any_id, second=any_id)
def test_keys_of_different_users_never_collide(prefix, first, second):
    if first != second:
        assert not set(user_keys(prefix, first).all()) & set(user_keys(prefix, second).all())


@settings(max_examples=300, deadline=None)
@given(prefix=prefixes, user=any_id)
def test_keys_stay_inside_their_prefix_and_hash_tag(prefix, user):
    keys = user_keys(prefix, user).all()
    tags = set()
    for key in keys:
        assert key.startswith(prefix + ":")
        rest = key[len(prefix) + 1 :]
        assert KEY_SHAPE.fullmatch(rest), key  # only hex inside the tag: nothing to escape
        tag = rest[: rest.index("}") + 1]  # Redis Cluster hashes the first {...} only
        tags.add(tag)
        assert user_from_tag(tag) == user
    assert len(tags) == 1
    assert len({key_slot(key.encode()) for key in keys}) == 1  # one slot: per-user scripts


@settings(max_examples=300, deadline=None)
@given(prefix=prefixes, user=any_id, other_prefix=prefixes)
def test_the_log_scan_finds_exactly_the_log_keys_of_its_prefix(prefix, user, other_prefix):
    log_key = user_keys(prefix, user).log
    assert user_from_log_key(prefix, log_key) == user
    pattern = re.compile(_glob_to_regex(log_key_pattern(prefix)))
    assert pattern.fullmatch(log_key)
    for key in user_keys(prefix, user).all():
        assert (pattern.fullmatch(key) is not None) == (key == log_key)
    if other_prefix != prefix:
        assert not pattern.fullmatch(user_keys(other_prefix, user).log)


def _glob_to_regex(pattern: str) -> str:
    """Redis MATCH glob (here only `*` is special) as a regular expression."""
    return ".*".join(re.escape(part) for part in pattern.split("*"))
