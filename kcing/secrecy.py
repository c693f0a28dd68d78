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
        self.quoted = re.compile("|".join(map(_as_quoted, self.secrets))) if self.secrets else None
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
# (a page wrapping a long header line, an echo folding it), as it is or escaped in JSON.
_BREAK = r"(?:\s|\\[nrt])*"


def _as_quoted(secret: str) -> str:
    """A pattern for `secret` as a server's answer may quote it: split across lines, and each
    character that is not a letter or digit also as JSON may escape it (`\\/`, `\\u002b`)."""
    parts = []
    for character in secret:
        if character.isascii() and character.isalnum():
            parts.append(character)
            continue
        forms = [re.escape(character), re.escape("\\" + character)]
        if ord(character) <= 0xFFFF:
            forms.append(r"\\u" + "".join("[%s%s]" % (digit, digit.upper()) if digit.isalpha() else digit
                                            for digit in "%04x" % ord(character)))
        parts.append("(?:%s)" % "|".join(forms))
    return _BREAK.join(parts)


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
