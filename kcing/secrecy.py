"""Secrets shown as `***` in whatever kcing writes: log lines, the line a failed command ends
with, and the excerpts of servers' answers that its messages quote.

The secrets are those of the command running (`remember`, called once its settings are read):
a server's answer can hold them, since a server that echoes its request (a stub or an echo
service at the wrong URL, a proxy's error page naming what it refused) quotes the credentials
sent. An excerpt is masked before it is cut, so that no part of a secret survives the cut.
"""
from __future__ import annotations

import re
from base64 import b64encode
from typing import Iterable
from urllib.parse import quote

from kcing.urls import redacted

# Secrets shorter than this are masked only as whole words (see Masker).
WHOLE_WORD_BELOW = 8


class Masker:
    """Replaces each of `secrets` in a text with `***`, and the values of signature and token
    parameters in URLs and credentials in URLs too (`kcing.urls.redacted`)."""

    def __init__(self, secrets: Iterable[str]):
        self._arrange(list(secrets))

    def add(self, secrets: Iterable[str]) -> None:
        """Mask `secrets` too from now on."""
        secrets = [secret for secret in secrets if secret not in self.all]
        if secrets:
            self._arrange(list(dict.fromkeys(self.all + secrets)))

    def _arrange(self, secrets: list) -> None:
        self.all = secrets
        # Longest first: a secret that holds another (a password and its percent-encoded form)
        # is masked whole.
        self.secrets = sorted((secret for secret in secrets if len(secret) >= WHOLE_WORD_BELOW), key=len, reverse=True)
        quoted = [pattern for pattern in map(_as_quoted, self.secrets) if pattern]
        self.quoted = re.compile("|".join(quoted)) if quoted else None
        # A short secret ("p") is masked only where it stands alone, not inside a longer run of
        # letters and digits: masked everywhere, it made every line unreadable ("htt***://")
        # and showed which letter the password is.
        short = sorted((secret for secret in secrets if 0 < len(secret) < WHOLE_WORD_BELOW), key=len, reverse=True)
        self.short = (re.compile(r"(?<![0-9A-Za-z])(?:%s)(?![0-9A-Za-z])" % "|".join(map(re.escape, short)))
                      if short else None)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        if self.quoted is not None:
            text = self.quoted.sub("***", text)
        if self.short is not None:
            text = self.short.sub("***", text)
        return redacted(text)


# What an answer may put between two characters of a secret it quotes: a line break or a space
# (a page wrapping a long header line, an echo folding it), as it is or escaped in JSON. Taken
# possessively (`*+`): all the breaks there are at once, never given back. Giving them back one by
# one, to try each way of cutting a long run of them (a page's indentation) between the breaks and
# the secret, took time quadratic in the run, and more for each space in the secret.
_BREAK = r"(?:\s|\\[nrt])*+"


def _as_quoted(secret: str) -> str:
    """A pattern for `secret` as a server's answer may quote it: split across lines, and each
    character that is not a letter or digit also as JSON may escape it (`\\/`, `\\u002b`).

    A character of the secret that a break can be read as (a space; a backslash before n, r or t,
    which make `\\n`) could be any of the breaks around it: each run of them, with the breaks
    around it, is read as one run of breaks and of the forms those characters take (`_run`),
    whatever their order. At the start of the secret such a run is left out: each character of a
    long run of breaks in the text would start a match reading the run to its end. A secret then
    shorter than WHOLE_WORD_BELOW has no pattern, which would mask it wherever it appears."""
    parts = []
    position = _run_length(secret, 0)
    if len(secret) - position < WHOLE_WORD_BELOW:
        return ""
    while position < len(secret):
        run = _run_length(secret, position)
        if run:
            if parts:
                parts[-1] = _run(secret[position:position + run])  # in place of the break before it
            position += run
            continue
        parts.append(_forms(secret[position]))
        parts.append(_BREAK)
        position += 1
    if parts and parts[-1] == _BREAK:
        parts.pop()
    return "".join(parts)


def _forms(character: str) -> str:
    """A pattern for one character of a secret: a letter or digit as it is, any other also escaped
    by a backslash or as JSON's `\\u` escape."""
    if character.isascii() and character.isalnum():
        return character
    forms = [re.escape(character), re.escape("\\" + character)]
    if ord(character) <= 0xFFFF:
        forms.append(r"\\u" + "".join("[%s%s]" % (digit, digit.upper()) if digit.isalpha() else digit
                                        for digit in "%04x" % ord(character)))
    return "(?:%s)" % "|".join(forms)


def _run_length(secret: str, position: int) -> int:
    """How many characters from `position` on a break can be read as (see `_as_quoted`)."""
    end = position
    while end < len(secret):
        if secret[end].isspace():
            end += 1
        elif secret[end] == "\\" and secret[end + 1:end + 2] in ("n", "r", "t"):
            end += 2
        else:
            break
    return end - position


def _run(characters: str) -> str:
    """The pattern of a run of `characters` a break can be read as, with the breaks around it:
    one or more breaks, forms of its spaces, and its backslashes before n, r or t in their forms,
    with any breaks before the letter."""
    forms = [r"\s", r"\\[nrt]"]
    for position, character in enumerate(characters):
        if character.isspace():
            forms.append(_forms(character))
        elif character == "\\":  # before n, r or t (`_run_length`)
            forms.append("%s%s%s" % (_forms("\\"), _BREAK, characters[position + 1]))
    return "(?:%s)++" % "|".join(dict.fromkeys(forms))


_current = Masker(())


def remember(masker: Masker) -> None:
    """Make `masker` the one `masked` applies: the secrets of the command running."""
    global _current
    _current = masker


def mask_credentials_too(user: str, password: str) -> None:
    """Mask from now on basic-auth credentials that no setting holds (a ~/.netrc entry's, a
    proxy URL's), in the forms a server echoing its request quotes them: the password as it is
    and percent-encoded, and the `Authorization` value, base64 of `user:password` in UTF-8 (and
    in latin-1, which requests sends a proxy where it can)."""
    texts = [password, quote(password, safe="")]
    for encoding in ("utf-8", "latin-1"):
        try:
            texts.append(b64encode(("%s:%s" % (user, password)).encode(encoding)).decode("ascii"))
        except UnicodeEncodeError:
            pass
    _current.add(text for text in texts if text)


def masked(text: str) -> str:
    """`text` with the secrets of the command running, and URL signatures, as `***`."""
    return _current(text)
