# ruff: noqa: RUF002  (the docstrings name the confusable characters on purpose)
"""Which account an email address names: the one rule, used by every write and every lookup.

Comparing emails two ways is how accounts get taken over: with PostgreSQL's `lower()` in the unique index and
Python's `.lower()` in the lookup, `vİctim@example.com` (PostgreSQL: `victim`; Python: `vi̇ctim`) blocked the real
`victim@example.com` and its password then logged in as them. So identity is computed here, in Python only, stored
in `user.email_key` (unique), and every lookup compares `email_key == email_identity(input)`; no SQL function
takes part.
"""

from __future__ import annotations

import unicodedata

import email_validator


def email_identity(address: str) -> str:
    """The key two addresses share exactly when they name the same account.

    1. The address is first reduced as it is stored (email-validator's `normalized`, as pydantic's `EmailStr` and
       app/validation.py do): surrounding whitespace (a trailing newline) dropped, the local part in NFC, the domain
       IDNA-normalised (lowercase; fullwidth, `xn--` and Unicode forms of one domain become one). The domain stays
       as IDNA leaves it: it decides which domain is meant (`straße.de` and `strasse.de` are two domains).
    2. The local part is folded: NFKC, `str.casefold()`, NFKC again (Unicode's compatibility caseless match). So
       case variants (`Alice`, `ALICE`), fullwidth forms (`ａｌｉｃｅ`), ligatures (`ﬃ`), precomposed and combining
       accents (`é`, `e\u0301`), Greek sigma in any form (`Σ`, `σ`, final `ς`) and German `ß`/`ss` are one account.
       Turkish dotted `İ` folds to `i̇` (with its dot) and dotless `ı` stays itself: neither is `i`, so neither can
       shadow an ASCII address. Merging more rather than less is the safe side: a second person is told the address
       exists; a recovery email only ever goes to the address the account stored.

    Zero-width and other invisible characters (U+200B, U+200C, U+200D, U+2060, U+FEFF, U+00AD) never get here from
    a request: email-validator rejects them as unsafe (422). An input that is not a valid address (a login's free
    `username`) is folded whole; no stored key can come from it, as every stored email was valid.
    """
    try:
        normalized = email_validator.validate_email(address.strip(), check_deliverability=False).normalized
    except email_validator.EmailNotValidError:
        return _fold(address)
    local, _, domain = normalized.rpartition("@")
    return f"{_fold(local)}@{domain}"


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
