"""bcrypt in pure Python, for the htpasswd file of the basic-auth test registry.

The distribution registry accepts only bcrypt htpasswd entries; this avoids a new dependency (or
apache2-utils) for one hash per test session. Blowfish's initial state is the hexadecimal digits
of pi, computed here rather than pasted. Slow (a fraction of a second at cost 4), and test-only.
"""

from __future__ import annotations

import os
from functools import cache

_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_MASK = 0xFFFFFFFF


def _arctan_inverse(x: int, scale: int) -> int:
    """arctan(1/x) * scale, by its Taylor series in integers."""
    total = term = scale // x
    x2, n, sign = x * x, 1, -1
    while term:
        term //= x2
        n += 2
        total += sign * (term // n)
        sign = -sign
    return total


@cache
def _pi_words() -> tuple[int, ...]:
    """The first 1042 32-bit words of pi's fractional part (Blowfish's P-array and S-boxes)."""
    bits = 1042 * 32
    scale = 1 << (bits + 64)
    pi = 16 * _arctan_inverse(5, scale) - 4 * _arctan_inverse(239, scale)  # Machin
    fraction = (pi >> 64) & ((1 << bits) - 1)
    return tuple((fraction >> (bits - 32 * (i + 1))) & _MASK for i in range(1042))


class _Blowfish:
    def __init__(self) -> None:
        words = _pi_words()
        self.p = list(words[:18])
        self.s = [list(words[18 + 256 * i : 18 + 256 * (i + 1)]) for i in range(4)]

    def encrypt(self, left: int, right: int) -> tuple[int, int]:
        p, s0, s1, s2, s3 = self.p, *self.s
        for i in range(16):
            left ^= p[i]
            f = ((s0[left >> 24] + s1[(left >> 16) & 0xFF]) & _MASK) ^ s2[(left >> 8) & 0xFF]
            right ^= (f + s3[left & 0xFF]) & _MASK
            left, right = right, left
        left, right = right, left
        return left ^ p[17], right ^ p[16]

    def expand(self, key: bytes, salt: bytes | None) -> None:
        position = 0

        def word(data: bytes) -> int:
            nonlocal position
            value = 0
            for _ in range(4):
                value = (value << 8) | data[position % len(data)]
                position += 1
            return value

        for i in range(18):
            self.p[i] ^= word(key)
        position = 0
        left = right = 0
        boxes = [self.p, *self.s]
        for box in boxes:
            for i in range(0, len(box), 2):
                if salt is not None:
                    left ^= word(salt)
                    right ^= word(salt)
                left, right = self.encrypt(left, right)
                box[i], box[i + 1] = left, right


def _encode(data: bytes) -> str:
    out = []
    for i in range(0, len(data), 3):
        chunk = data[i : i + 3]
        value = int.from_bytes(chunk.ljust(3, b"\0"), "big")
        chars = [_ALPHABET[(value >> shift) & 63] for shift in (18, 12, 6, 0)]
        out.extend(chars[: len(chunk) + 1])
    return "".join(out)


def _decode(text: str, length: int) -> bytes:
    value = 0
    for char in text:
        value = (value << 6) | _ALPHABET.index(char)
    total_bits = 6 * len(text)
    return (value >> (total_bits - 8 * length)).to_bytes(length, "big")


def bcrypt(password: str, salt: str | None = None, cost: int = 4) -> str:
    """`$2b$<cost>$<salt><hash>` for `password`; `salt` is 22 bcrypt-base64 characters."""
    salt = salt or _encode(os.urandom(16))[:22]
    raw_salt = _decode(salt[:22], 16)
    key = (password.encode() + b"\0")[:72]
    state = _Blowfish()
    state.expand(key, raw_salt)
    for _ in range(1 << cost):
        state.expand(key, None)
        state.expand(raw_salt, None)
    magic = b"OrpheanBeholderScryDoubt"
    words = [int.from_bytes(magic[i : i + 4], "big") for i in range(0, 24, 4)]
    for _ in range(64):
        for j in range(0, 6, 2):
            words[j], words[j + 1] = state.encrypt(words[j], words[j + 1])
    digest = b"".join(w.to_bytes(4, "big") for w in words)[:23]
    return f"$2b${cost:02d}${_encode(raw_salt)[:22]}{_encode(digest)}"


def htpasswd_line(user: str, password: str) -> str:
    return f"{user}:{bcrypt(password)}\n"
