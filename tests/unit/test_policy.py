"""Content policy: tier detection, obfuscated spellings, prohibited categories, permissions, hot reload.

Every vocabulary term here is a made-up neutral word: the code base never carries explicit text. The
shipped placeholders are "zorblax" (explicit) and "quuxel fizzbin" (unrestricted); the rest come from an
operator directory built in tmp_path.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import threading
from pathlib import Path

import pytest

from ourvidz.policy import (
    SHIPPED_DIR,
    ContentPolicy,
    ContentProhibited,
    ContentTier,
    ContentTierNotAllowed,
    ProhibitedCategory,
    Verdict,
    check_prompt,
    get_policy,
    log_prohibited,
    text_hash,
    tier_permitted,
)

A, E, U = ContentTier.ARTISTIC, ContentTier.EXPLICIT, ContentTier.UNRESTRICTED
MINORS, NON_CONSENT, REAL_PEOPLE = list(ProhibitedCategory)


def write_vocab(root: Path, rel: str, *terms: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# test vocabulary\n\n" + "".join(f"{term}\n" for term in terms), encoding="utf-8")
    return path


@pytest.fixture
def operator_dir(tmp_path: Path) -> Path:
    root = tmp_path / "vocabularies"
    write_vocab(root, "explicit.txt", "glimmerwock  # an inline comment", "wuzzle frap")
    write_vocab(root, "unrestricted.txt", "snorfblat")
    write_vocab(root, "prohibited/real_people.txt", "Testy McPlaceholder")
    write_vocab(root, "prohibited/minors.always.txt", "blorptangle")
    return root


@pytest.fixture
def policy(operator_dir: Path) -> ContentPolicy:
    return ContentPolicy(operator_dir)


def test_content_tier_enum_is_unchanged() -> None:
    assert [t.value for t in ContentTier] == ["artistic", "explicit", "unrestricted"]


@pytest.mark.parametrize(
    ("text", "tier"),
    [
        ("a watercolour lighthouse at dawn", A),
        ("", A),
        ("a zorblax scene", E),  # shipped explicit placeholder
        ("placeholder-explicit-term", E),
        ("quuxel fizzbin at night", U),  # shipped unrestricted phrase
        ("glimmerwock", E),  # operator explicit
        ("some wuzzle frap", E),  # operator explicit phrase
        ("snorfblat", U),  # operator unrestricted
        ("zorblax and snorfblat", U),  # the highest tier wins
    ],
)
def test_each_tier_is_detected(policy: ContentPolicy, text: str, tier: ContentTier) -> None:
    assert policy.detect_tier(text) is tier


@pytest.mark.parametrize(
    "text",
    [
        "ZORBLAX",
        "ZorBlax",
        "z o r b l a x",
        "z.o.r.b.l.a.x",
        "z_o_r_b_l_a_x",
        "zor-blax",
        "zor...blax!",
        "zorb\u200blax",  # zero-width space
        "z\u200do\u2060rbl\ufeffax",  # zero-width joiner, word joiner, BOM
        "z\u00f6rbl\u00e4x",  # precomposed accents
        "zo\u0301rbla\u0308x",  # combining accents
        "z\u043erbl\u0430x",  # Cyrillic o and a
        "Z\u041eRBL\u0410X",  # Cyrillic capital O and A
        "z\u03bfrbl\u03b1x",  # Greek omicron and alpha
        "z0rbl4x",
        "z0rb1ax",  # 1 for l
        "\uff5a\uff4f\uff52\uff42\uff4c\uff41\uff58",  # fullwidth letters
        "zorrrblax",
        "zooorblaaaax",
        "z000rblax",
        "zooo rblax",
        "a scene with Z . 0 . R . B . L . 4 . X in it",
    ],
)
def test_obfuscated_spellings_are_detected(policy: ContentPolicy, text: str) -> None:
    assert policy.detect_tier(text) is E


@pytest.mark.parametrize("text", ["$norfbl@t", "5n0rfbl47", "sn\u043erfbl\u0430t"])
def test_leetspeak_symbols_and_digits(policy: ContentPolicy, text: str) -> None:
    assert policy.detect_tier(text) is U


@pytest.mark.parametrize(
    "text",
    [
        "zorblaxian",
        "antizorblax",
        "prezorblaxed",
        "a zorb laxative",  # separate words that only start like the term
        "glimmerwocks",  # inflected forms must be listed on their own
        "zorblaxish",
    ],
)
def test_a_term_inside_a_longer_word_does_not_match(policy: ContentPolicy, text: str) -> None:
    assert policy.detect_tier(text) is A


@pytest.mark.parametrize(
    ("text", "tier"),
    [
        ("quuxel fizzbin", U),
        ("quuxel   ---   fizzbin", U),
        ("QUUXEL\n\tFizzbin", U),
        ("quuxel, fizzbin.", U),
        ("quuxelfizzbin", U),
        ("quuxel", A),
        ("fizzbin", A),
        ("quuxel and fizzbin", A),  # another word in between breaks the phrase
        ("fizzbin quuxel", A),
    ],
)
def test_phrases_match_across_separators(policy: ContentPolicy, text: str, tier: ContentTier) -> None:
    assert policy.detect_tier(text) is tier


def test_squeezing_repeats_applies_only_to_words_with_a_tripled_letter(policy: ContentPolicy) -> None:
    assert policy.detect_tier("wuzzzle frrrap") is E
    assert policy.detect_tier("a sooo snorrrfblat, fine") is U
    # "wuzle" and "frap" are not terms; only the tripled word would be squeezed, so no match.
    assert policy.detect_tier("sooo wuzle frap") is A
    assert policy.detect_tier("quite a villlage, zorbllax") is A  # "ll" alone is not squeezed


def test_operator_files_extend_the_shipped_ones(operator_dir: Path) -> None:
    with_operator, shipped_only = ContentPolicy(operator_dir), ContentPolicy(None)
    assert with_operator.detect_tier("zorblax") is E  # shipped term kept
    assert with_operator.detect_tier("glimmerwock") is E  # operator term added
    assert shipped_only.detect_tier("zorblax") is E
    assert shipped_only.detect_tier("glimmerwock") is A


def test_misnamed_operator_files_are_ignored_with_a_warning(
    operator_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_vocab(operator_dir, "explict.txt", "flumpet")
    with caplog.at_level(logging.WARNING, logger="ourvidz.policy"):
        policy = ContentPolicy(operator_dir)
    assert policy.detect_tier("flumpet") is A
    assert any("explict.txt" in record.getMessage() for record in caplog.records)


def test_operator_directory_may_be_missing(tmp_path: Path) -> None:
    policy = ContentPolicy(tmp_path / "does-not-exist")
    assert policy.detect_tier("zorblax") is E
    assert policy.classify("a child, zorblax").category is MINORS


PROHIBITED = [
    ("a child, zorblax", MINORS),
    ("two KIDS with quuxel fizzbin", MINORS),
    ("ch1ld z0rblax", MINORS),
    ("a t\u043eddler, zorblax", MINORS),
    ("a 12 year old, zorblax", MINORS),
    ("a twelve-year-old, zorblax", MINORS),
    ("15yo glimmerwock", MINORS),
    ("a seventeen years old, zorblax", MINORS),
    ("a 9 y/o, zorblax", MINORS),
    ("zorblax, non-consensual", NON_CONSENT),
    ("zorblax against her will", NON_CONSENT),
    ("unconscious, snorfblat", NON_CONSENT),
    ("Testy McPlaceholder, zorblax", REAL_PEOPLE),  # operator-listed name
    ("a real person, zorblax", REAL_PEOPLE),
]


@pytest.mark.parametrize(("text", "category"), PROHIBITED)
@pytest.mark.parametrize("allowed", list(ContentTier))
@pytest.mark.parametrize("age_verified", [False, True])
def test_prohibited_is_refused_at_every_tier_for_every_profile(
    policy: ContentPolicy, text: str, category: ProhibitedCategory, allowed: ContentTier, age_verified: bool
) -> None:
    with pytest.raises(ContentProhibited) as excinfo:
        check_prompt(policy, text, allowed, age_verified, requested_tier=allowed)
    assert excinfo.value.category is category
    assert excinfo.value.code == "CONTENT_PROHIBITED"
    assert text not in str(excinfo.value)
    assert excinfo.value.text_hash == text_hash(text)


def test_prohibited_cannot_be_disabled_by_an_operator(tmp_path: Path) -> None:
    root = tmp_path / "vocabularies"
    for category in ProhibitedCategory:
        write_vocab(root, f"prohibited/{category}.txt")  # empty: comments only
        write_vocab(root, f"prohibited/{category}.always.txt")
    policy = ContentPolicy(root)
    with pytest.raises(ContentProhibited) as excinfo:
        check_prompt(policy, "a child, zorblax", U, True)
    assert excinfo.value.category is MINORS
    # No argument of the public entry points can switch the check off.
    assert list(inspect.signature(ContentPolicy).parameters) == ["operator_dir", "semantic_model"]
    assert list(inspect.signature(check_prompt).parameters) == [
        "policy",
        "text",
        "allowed_tier",
        "age_verified",
        "requested_tier",
        "moderator",
    ]


def test_shipped_prohibited_files_exist_and_are_not_empty() -> None:
    for category in ProhibitedCategory:
        assert (SHIPPED_DIR / "prohibited" / f"{category}.txt").is_file()
        assert (SHIPPED_DIR / "prohibited" / f"{category}.always.txt").is_file()
    minors = (SHIPPED_DIR / "prohibited" / "minors.txt").read_text().splitlines()
    assert "child" in minors


@pytest.mark.parametrize(
    "text", ["a child playing in a park", "kids flying kites", "a 12 year old at school", "an infant asleep"]
)
def test_a_minor_term_without_sexual_context_is_allowed(policy: ContentPolicy, text: str) -> None:
    verdict = check_prompt(policy, text, A, False)
    assert verdict == Verdict(tier=A, detected=A)


def test_a_minor_term_in_a_request_for_a_higher_tier_is_refused(policy: ContentPolicy) -> None:
    assert check_prompt(policy, "a child playing in a park", U, True).tier is A
    with pytest.raises(ContentProhibited):
        check_prompt(policy, "a child playing in a park", U, True, requested_tier=E)


@pytest.mark.parametrize(
    "text",
    [
        "kidney beans, zorblax",
        "a minority report, zorblax",
        "a 25 year old, zorblax",
        "a 21-year-old, zorblax",
        "a twenty-one year old, zorblax",
        "a 2.5 years old building, zorblax",
        "9 yoga mats, zorblax",
    ],
)
def test_no_prohibited_false_positives(policy: ContentPolicy, text: str) -> None:
    assert policy.classify(text).category is None


def test_always_terms_are_refused_without_sexual_context(policy: ContentPolicy) -> None:
    assert policy.detect_tier("a bl0rp-tangle") is A
    for allowed, age_verified in itertools.product(ContentTier, [False, True]):
        with pytest.raises(ContentProhibited) as excinfo:
            check_prompt(policy, "a bl0rp-tangle", allowed, age_verified)
        assert excinfo.value.category is MINORS


# What a profile may use, written out rather than recomputed: (allowed, age_verified) -> tiers.
PERMITTED = {
    (A, False): {A},
    (A, True): {A},
    (E, False): {A},
    (E, True): {A, E},
    (U, False): {A},
    (U, True): {A, E, U},
}


@pytest.mark.parametrize(("allowed", "age_verified"), list(PERMITTED))
@pytest.mark.parametrize("requested", list(ContentTier))
def test_permission_matrix(
    policy: ContentPolicy, allowed: ContentTier, age_verified: bool, requested: ContentTier
) -> None:
    permitted = requested in PERMITTED[(allowed, age_verified)]
    assert tier_permitted(requested, allowed, age_verified) is permitted
    prompt = {A: "a lighthouse", E: "a zorblax lighthouse", U: "a snorfblat lighthouse"}[requested]
    if permitted:
        assert check_prompt(policy, prompt, allowed, age_verified) == Verdict(requested, requested)
        return
    with pytest.raises(ContentTierNotAllowed) as excinfo:
        check_prompt(policy, prompt, allowed, age_verified)
    error = excinfo.value
    assert (error.code, error.requested, error.allowed, error.age_verified) == (
        "CONTENT_TIER_NOT_ALLOWED",
        requested,
        allowed,
        age_verified,
    )
    order = list(ContentTier)
    above = order.index(requested) > order.index(allowed)
    assert ("is above the allowed tier" if above else "requires age verification") in str(error)


def test_requested_tier_above_the_detected_one(policy: ContentPolicy) -> None:
    assert check_prompt(policy, "a lighthouse", U, True, requested_tier=E) == Verdict(tier=E, detected=A)
    assert check_prompt(policy, "a zorblax lighthouse", U, True, requested_tier=A) == Verdict(E, E)
    with pytest.raises(ContentTierNotAllowed) as excinfo:
        check_prompt(policy, "a lighthouse", E, True, requested_tier=U)
    assert (excinfo.value.requested, excinfo.value.allowed) == (U, E)


def bump(path: Path) -> None:
    """Move the mtime forward so the change shows even on coarse-grained filesystem clocks."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_reload_if_changed_picks_up_an_edited_file(policy: ContentPolicy, operator_dir: Path) -> None:
    assert policy.reload_if_changed() is False
    assert policy.detect_tier("flumpet") is A
    path = write_vocab(operator_dir, "explicit.txt", "glimmerwock", "flumpet")
    bump(path)
    assert policy.reload_if_changed() is True
    assert policy.detect_tier("flumpet") is E
    assert policy.detect_tier("wuzzle frap") is A  # removed from the operator file
    assert policy.reload_if_changed() is False


def test_reload_if_changed_sees_a_new_and_a_removed_file(policy: ContentPolicy, operator_dir: Path) -> None:
    write_vocab(operator_dir, "prohibited/non_consent.always.txt", "grumblesnatch")
    assert policy.reload_if_changed() is True
    assert policy.classify("grumblesnatch").category is NON_CONSENT
    (operator_dir / "prohibited" / "non_consent.always.txt").unlink()
    assert policy.reload_if_changed() is True
    assert policy.classify("grumblesnatch").category is None


def test_a_broken_file_keeps_the_previous_vocabularies(policy: ContentPolicy, operator_dir: Path) -> None:
    path = operator_dir / "explicit.txt"
    path.write_bytes(b"flumpet\n\xff\xfe broken\n")
    bump(path)
    assert policy.reload_if_changed() is False
    assert policy.detect_tier("glimmerwock") is E
    assert policy.detect_tier("flumpet") is A
    with pytest.raises(UnicodeDecodeError):
        policy.reload()
    assert policy.detect_tier("glimmerwock") is E
    write_vocab(operator_dir, "explicit.txt", "flumpet")
    bump(path)
    assert policy.reload_if_changed() is True
    assert policy.detect_tier("flumpet") is E


def test_checks_during_reloads_see_old_or_new_vocabularies(tmp_path: Path) -> None:
    root = tmp_path / "vocabularies"
    old = ("explicit.txt", "flumpet"), ("unrestricted.txt", "grizzle")
    new = ("explicit.txt", "grizzle"), ("unrestricted.txt", "flumpet")
    for rel, term in old:
        write_vocab(root, rel, term)
    policy = ContentPolicy(root)
    seen: set[tuple[ContentTier, ContentTier]] = set()
    stop = threading.Event()

    def check() -> None:
        while not stop.is_set():
            seen.add((policy.detect_tier("flumpet"), policy.classify("grizzle").tier))

    reader = threading.Thread(target=check)
    reader.start()
    try:
        for round_ in range(30):
            for rel, term in old if round_ % 2 else new:
                write_vocab(root, rel, term)
            policy.reload()
    finally:
        stop.set()
        reader.join()
    # Each lookup reads one snapshot; every single result is a tier from the old or the new files.
    assert seen
    assert all(pair[0] in {E, U} and pair[1] in {E, U} for pair in seen)


def test_log_helper_never_contains_the_text(caplog: pytest.LogCaptureFixture) -> None:
    text = "a child with zorblax, unique-marker-7731"
    caplog.set_level(logging.DEBUG, logger="ourvidz.policy")
    digest = log_prohibited(MINORS, text)
    assert digest == text_hash(text) and len(digest) == 12
    with pytest.raises(ContentProhibited):
        check_prompt(get_policy(None), text, U, True)
    messages = [r.getMessage() for r in caplog.records if "content prohibited" in r.getMessage()]
    assert len(messages) == 2
    for message in messages:
        assert "category=minors" in message and digest in message
        assert "unique-marker-7731" not in message and "zorblax" not in message


def test_get_policy_is_cached_per_directory(operator_dir: Path) -> None:
    assert get_policy(operator_dir) is get_policy(str(operator_dir))
    assert get_policy(operator_dir) is not get_policy(None)
    assert get_policy(operator_dir).detect_tier("glimmerwock") is E


def test_a_few_hundred_operator_terms_are_all_matched(tmp_path: Path) -> None:
    """A large operator vocabulary still matches every term and spares a long benign prompt (its speed is
    measured in bench/content_gate.py, not here)."""
    syllables = ["zib", "quo", "fen", "dra", "mok", "tuv", "pli", "gor"]
    words = ["".join(parts) for parts in itertools.product(syllables, repeat=3)]  # 512 made-up words
    root = tmp_path / "vocabularies"
    write_vocab(root, "explicit.txt", *words[:250])
    phrases = [f"{a} {b}" for a, b in zip(words[250:381], words[381:], strict=True)]  # 131 phrases
    write_vocab(root, "unrestricted.txt", *phrases)
    policy = ContentPolicy(root)
    prompt = (
        "A cinematic wide shot of a lighthouse on a rocky coast at dawn, dramatic clouds, soft golden light, "
        "waves crashing against the rocks, seagulls in flight, ultra detailed, 35mm film grain, "
        "shallow depth of field, muted teal and orange palette, by a famous painter, trending, 8k, "
        "a quiet fishing village in the distance with small boats and warm lamps in the windows"
    )
    assert policy.detect_tier(prompt) is A
    assert policy.detect_tier(prompt + " sooo quiet, a villlage") is A  # the squeezing path, still benign
    assert policy.detect_tier(prompt + " z.i.b.q.u.o.f.e.n") is E
    assert all(policy.detect_tier(f"{prompt} {word}") is E for word in words[:250])
    assert all(policy.detect_tier(f"{prompt} {phrase}") is U for phrase in phrases)
