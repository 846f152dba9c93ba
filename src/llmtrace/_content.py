"""Content capture policy: whether message content is recorded, and how it is made safe to record.

Message content (prompts, completions, tool arguments and results, retrieved documents) is
opt-in. When it is captured, it goes through one pipeline, :func:`serialize_content`:

1. conversion to JSON-compatible data that never fails on odd objects, with very long
   strings and very large collections cut early (:func:`to_jsonable`), and inline media
   (base64 ``data:`` URLs, the content of blob parts) replaced by a placeholder giving its size;
2. masking of credentials in secret-looking keys and in strings (:func:`scrub_secrets`);
3. the user's redaction hook, if configured;
4. compact JSON, bounded in size and still valid when truncated (:func:`dumps_bounded`).

Everything here runs inside instrumented applications, so nothing raises on bad input, and
nothing is done at all while capture is off.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import decimal
import enum
import json
import logging
import math
import os
import re
import sys
import types
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import PurePath
from typing import Any, Final, TypeAlias

from llmtrace._objects import BoundedCache

logger = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

DEFAULT_MAX_ATTRIBUTE_LENGTH: Final = 32 * 1024
"""Characters of one content attribute."""
DEFAULT_MAX_SPAN_CONTENT: Final = 512 * 1024
"""Characters of all content attributes of one span together: far below the 4 MiB OTLP/gRPC limit."""
MIN_ATTRIBUTE_LENGTH: Final = 64
DEFAULT_MAX_DEPTH: Final = 20
MAX_ITEMS: Final = 1000
"""Items kept from one list, tuple, set or dict; the rest are replaced by a marker."""

REDACTED: Final = "[REDACTED]"
REDACTION_FAILED: Final = "[redaction failed]"
CYCLE: Final = "[cycle]"
MAX_DEPTH_REACHED: Final = "[max depth]"
MORE_KEY: Final = "…"
"""Key of the marker entry standing for the entries dropped from a dict."""

_TRUNCATED_JSON: Final = '"[truncated]"'
_MAX_KEY_LENGTH: Final = 256
_SCRUB_MARGIN: Final = 256
"""Extra characters kept before scrubbing, so that a secret across the cut is still recognised."""
_MAX_INT_BITS: Final = 4096
_FIT_ATTEMPTS: Final = 4
_UNBOUNDED: Final = sys.maxsize


# --------------------------------------------------------------------------------------
# Capture mode
# --------------------------------------------------------------------------------------
class CaptureMode(enum.Enum):
    """Where captured message content goes: the values of :data:`CAPTURE_CONTENT_ENV`."""

    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def on_span(self) -> bool:
        """Content is recorded as span attributes."""
        return self is CaptureMode.SPAN_ONLY or self is CaptureMode.SPAN_AND_EVENT

    @property
    def on_event(self) -> bool:
        """Content is recorded on the inference details event."""
        return self is CaptureMode.EVENT_ONLY or self is CaptureMode.SPAN_AND_EVENT


_MODES_BY_TEXT: Final[dict[str, CaptureMode]] = {
    **{mode.value.lower(): mode for mode in CaptureMode},
    # legacy boolean values of the variable
    "true": CaptureMode.SPAN_ONLY,
    "false": CaptureMode.NO_CONTENT,
}
_VALID_VALUES: Final = ", ".join(mode.value for mode in CaptureMode)


def capture_mode_from_env() -> CaptureMode:
    """The capture mode set in the environment; ``NO_CONTENT`` (with a warning) for an invalid value."""
    raw = os.environ.get(CAPTURE_CONTENT_ENV, "")
    if not raw.strip():
        return CaptureMode.NO_CONTENT
    mode = _MODES_BY_TEXT.get(raw.strip().lower())
    if mode is None:
        logger.warning(
            "Ignoring %s=%r (expected one of %s, true or false): message content is not captured",
            CAPTURE_CONTENT_ENV,
            raw[:100],
            _VALID_VALUES,
        )
        return CaptureMode.NO_CONTENT
    return mode


def parse_capture_mode(value: str | bool | CaptureMode | None) -> CaptureMode:
    """The capture mode given to ``configure()``: a mode, its name (any case) or a bool.

    ``None`` means "not given": the environment decides. Raises :class:`ValueError` for anything
    else, since a configuration mistake must not pass silently.
    """
    if value is None:
        return capture_mode_from_env()
    if isinstance(value, CaptureMode):
        return value
    if isinstance(value, bool):
        return CaptureMode.SPAN_ONLY if value else CaptureMode.NO_CONTENT
    if isinstance(value, str):
        mode = _MODES_BY_TEXT.get(value.strip().lower())
        if mode is not None:
            return mode
    raise ValueError(f"invalid content capture mode {value!r}: expected one of {_VALID_VALUES} or a bool")


# --------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ContentPolicy:
    """How message content is captured.

    ``redact(attribute_key, value)`` is an optional hook that receives the content as JSON-like
    data (the list/dict shapes of the GenAI conventions, secrets already masked, very long strings
    already cut) and returns it changed, or ``None`` to drop it. If it raises, the content is
    replaced by ``"[redaction failed]"``: content is never recorded unredacted.
    """

    mode: CaptureMode = CaptureMode.NO_CONTENT
    max_attribute_length: int = DEFAULT_MAX_ATTRIBUTE_LENGTH
    redact: Callable[[str, Any], Any] | None = None
    max_span_content: int = DEFAULT_MAX_SPAN_CONTENT

    def __post_init__(self) -> None:
        if not isinstance(self.mode, CaptureMode):
            raise TypeError(f"mode must be a CaptureMode, got {self.mode!r}")
        for name in ("max_attribute_length", "max_span_content"):
            limit = getattr(self, name)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < MIN_ATTRIBUTE_LENGTH:
                raise ValueError(f"{name} must be an int of at least {MIN_ATTRIBUTE_LENGTH}, got {limit!r}")
        if self.redact is not None and not callable(self.redact):
            raise TypeError(f"redact must be callable, got {self.redact!r}")

    @property
    def enabled(self) -> bool:
        """Content is captured somewhere."""
        return self.mode is not CaptureMode.NO_CONTENT

    @classmethod
    def from_env(cls) -> ContentPolicy:
        """The policy set by the environment (no redaction hook, default sizes)."""
        return cls(mode=capture_mode_from_env())


# --------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------
# Keys are matched normalised to snake case, at one of three strengths.
#
# _SECRET_KEY: the value is masked, whatever it is. "token" must end the key, so token counts
# such as max_tokens or input_tokens are kept. api_key, passwd, pwd and token may end a longer
# word (openaiapikey, pgpasswd, csrftoken), as may sess(ion)id (sessionid, jsessionid, phpsessid:
# session cookies; session_id, a conversation's id in LLM frameworks, is kept). The other words
# must start one, after normalisation (x_custom_auth, basic_auth; not oauth).
_SECRET_KEY: Final = re.compile(
    r"(?:^|_)(?:auth|authorization|passphrase|bearer|cookies?|credentials?"
    r"|(?:access|private|subscription)_key|private_key_id|sig)$"
    r"|(?:api_?key|passwd|pwd|token|sess(?:ion)?id)$"
    r"|secret|password"
)
# _PASS_KEY ("pass", "db_pass"): a string value is masked; {"pass": true} in a test report is kept.
_PASS_KEY: Final = re.compile(r"(?:^|_)pass$")
# _KEY_KEY ("key", "cache_key", "groq_key"): "key" is mostly not a credential (cache keys, sort
# keys, S3 object keys, {"key": "value"} in a user's document), and masking all of them would
# destroy ordinary content. A string is masked only when it looks generated: one word of 16 or
# more letters, digits and _-+/=, with both letters and digits, and when it has a "/" at least
# 40 long, so that paths stay (AWS secret keys are 40, Azure storage keys 88). That masks some
# identifiers too (UUIDs, some cache keys): deliberately, since some services use UUIDs as API
# keys. Credentials with a known shape (sk-..., gsk_..., JWTs) are masked under any key anyway.
_KEY_KEY: Final = re.compile(r"(?:^|_)key$")
_CREDENTIAL_LIKE: Final = re.compile(r"(?=[^0-9]*[0-9])(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9_+/=-]{16,}")
_KEY_WORD_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[\s.-]+")
_PAIR_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A header-like name: the first of two items of a list or tuple, such as ("Authorization", "...")."""

_NOT_SECRET: Final = 0
_SECRET: Final = 1
_SECRET_IF_STRING: Final = 2
_SECRET_IF_CREDENTIAL_LIKE: Final = 3

_KEEP_PREFIX: Final = f"\\g<1>{REDACTED}"


def _keep_head(match: re.Match[str]) -> str:
    """``head`` kept, the value masked; a quoted value keeps its quotes."""
    quote = match.group("q")
    head = match.group("head") + (match.group("scheme") or "")
    if quote is None:
        return head + REDACTED
    return head + quote + (match.group("qscheme") or "") + REDACTED + match.group("end")


# "name: value", "name=value", "name": "value", 'name': 'value' (dict reprs in error messages),
# \"name\": \"value\" (JSON inside JSON), and ('name', 'value') for header names.
_SEP: Final = r"\\?[\"']?[ \t]*(?::=|==|=>|[:=])[ \t]*(?![ \t])"
_PAIR_SEP: Final = r"\\?[\"'][ \t]*,[ \t]*(?=\\?[\"'])"
# A quoted value runs to its closing quote (escapes skipped) or, if cut, to the end of the line;
# a bare one to the next space, quote or & (the next URL parameter). Greedy on purpose: masking a
# trailing bracket is better than leaking the end of a password.
_QUOTED: Final = r"(?P<q>\\?[\"']){scheme}(?:\\.|[^\\\n])*?(?P<end>(?P=q)|(?=\n)|\Z)"
# Names masked in text. Bare "key" and "pass" are not: "Key: press Enter" and "pass: 3" are
# ordinary text. The ('name', 'value') form only for header names: ["token", "embedding"] is a
# list of words. An unquoted password or cookie runs to the end of the line (a passphrase has
# spaces, a cookie header several cookies). A value masked already (?api_key=[REDACTED]#top) is
# left alone. As for keys (see _SECRET_KEY), the first names may end a longer word (PGPASSWORD,
# OPENAIAPIKEY, MY_TOKEN), the others must start one (X-Custom-Auth, basicAuth, Set-Cookie; not
# OAuth).
#
# No value starts with a space or tab: _SEP takes them all ((?![ \t]) fails at once on a shorter
# run), and the search stays linear. A value that could start with spaces, after separators that
# can give them back one by one, made "password=" + spaces + "&" quadratic, each shorter run
# scanning the rest of the line again.
_HEADER_NAMES: Final = r"api[_-]?key|subscription[_-]?key"
_OTHER_NAMES: Final = r"(?:secret|access|private)[_-]?key|secret|token"
_PASSWORD_NAMES: Final = r"passw(?:or)?d|passphrase|pwd"


def _word_start(name: str) -> str:
    """``name`` starting a word: after no letter or digit, or camel case (``basicAuth``). The checks
    follow the name, so that the pattern starts with a letter, which the search skips to quickly."""
    first, rest = name[0], name[1:]
    return f"{name}(?:(?<![A-Za-z0-9]{name})|(?<=(?-i:[a-z0-9]{first.upper()}){rest}))"


_AUTH_NAMES: Final = f"{_word_start('auth')}|{_word_start('credential')}s?"
_COOKIE_NAMES: Final = f"{_word_start('cookie')}s?"
_NAME_VALUE: Final = re.compile(
    r"(?P<head>"
    rf"(?:{_HEADER_NAMES}|{_AUTH_NAMES})(?:{_SEP}|{_PAIR_SEP})"
    rf"|(?:{_OTHER_NAMES}){_SEP}"
    rf"|(?P<line>(?:{_PASSWORD_NAMES}){_SEP}|(?:{_COOKIE_NAMES})(?:{_SEP}|{_PAIR_SEP})))"
    + "(?:"
    + _QUOTED.format(scheme="(?P<qscheme>)")
    + r"|(?P<scheme>)(?!\[REDACTED\])(?(line)[^\s\"'&](?:[^\r\n\"'&]*[^\s\"'&])?|[^\s\"'&]+))",
    re.IGNORECASE,
)
# An authorization header as text: the scheme is kept, the rest of the value masked (to the end of
# the line if unquoted: some schemes have several parts).
_AUTH_SCHEMES: Final = (
    r"(?:basic|bearer|token|digest|negotiate|ntlm|api-?key|key|dpop|ssws|aws4-hmac-sha256)[ \t]+(?![ \t])"
)
_AUTHORIZATION: Final = re.compile(
    rf"(?P<head>(?<![A-Za-z0-9])(?:proxy-)?authorization(?:{_SEP}|{_PAIR_SEP}))"
    + "(?:"
    + _QUOTED.format(scheme=f"(?P<qscheme>{_AUTH_SCHEMES})?")
    + rf"|(?P<scheme>{_AUTH_SCHEMES})?[^\s\"'\\][^\r\n\"'\\]*)",
    re.IGNORECASE,
)


def _gate(literal: str, rest: str) -> re.Pattern[str]:
    """A quick check for ``literal`` followed by ``rest``: a pattern that starts with a literal is
    searched for much faster than one that starts with a look-behind, a \\b or a character class."""
    return re.compile(re.escape(literal) + rest)


def _anchored(anchor: str, shapes: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(gate, pattern) for credentials ``prefix + anchor + body``: the gate finds the anchor
    character and looks behind it for a prefix, which is cheap even when the anchor is common."""
    gate = re.compile(
        re.escape(anchor)
        + "(?:"
        + "|".join(rf"(?<=\b{prefix}{re.escape(anchor)}){body}" for prefix, body in shapes)
        + ")"
    )
    pattern = re.compile(
        r"\b(?:" + "|".join(f"{prefix}{re.escape(anchor)}{body}" for prefix, body in shapes) + ")"
    )
    return gate, pattern


_HYPHENATED_KEYS: Final = _anchored(
    "-",
    (
        # OpenAI sk-, sk-proj-; Anthropic sk-ant-, sk-ant-admin; OpenRouter sk-or-
        ("sk", r"[A-Za-z0-9_-]{20,}"),
        ("xai", r"[A-Za-z0-9_-]{20,}"),  # xAI
        ("pplx", r"[A-Za-z0-9_-]{20,}"),  # Perplexity
        ("glpat", r"[A-Za-z0-9_-]{20,}"),  # GitLab
        ("GOCSPX", r"[A-Za-z0-9_-]{20,}"),  # Google OAuth client secrets
        ("xox[abpors]", r"[A-Za-z0-9-]{10,}"),  # Slack
    ),
)
_UNDERSCORED_KEYS: Final = _anchored(
    "_",
    (
        ("gsk", r"[A-Za-z0-9]{20,}"),  # Groq
        ("hf", r"[A-Za-z0-9]{30,}"),  # Hugging Face
        ("gh[pousr]", r"[A-Za-z0-9]{30,}"),  # GitHub classic
        ("github", r"pat_[A-Za-z0-9_]{22,}"),  # GitHub fine-grained
        ("[rs]k", r"(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe secret and restricted keys
        ("npm", r"[A-Za-z0-9]{30,}"),  # npm
        ("r8", r"[A-Za-z0-9]{30,}"),  # Replicate
        ("shp(?:at|ca|pa|ss)", r"[a-fA-F0-9]{32}"),  # Shopify
        ("do[opr]", r"v1_[a-f0-9]{64}"),  # DigitalOcean
    ),
)
_JWT: Final = re.compile(
    r"(?<![A-Za-z0-9_-])((?:(?:[A-Za-z0-9_]|-(?!eyJ))*-)??)"
    r"(?<!\w)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
)
_HEADER_GATE_END: Final = r"\\?[\"']?[ \t]*[:=,]"

# Command lines: a secret given as the argument after a flag named for it (--password X,
# --db-password X, --api-key X, --client-secret X, --token X, httpie's --auth X, curl's --pass X,
# openssl's -passin X, keytool's -storepass X, PowerShell's -Password X). --password=X is a
# name=value pair (_NAME_VALUE). The flag starts an argument (after a space, a quote, a bracket or
# at the start), and the name is its last dash-separated part: --max-tokens, --token-file,
# --password-stdin and --tokenizer are kept, as are boolean flags such as --no-password,
# --ask-pass and --with-token. The value is the next argument on the same line, quoted or not,
# unless it is no value: another flag (-x), shell syntax (< > | & ;), a variable ($TOKEN,
# ${TOKEN}), markup ([cyan]), a placeholder (YOUR_TOKEN, ***, password) or a word of prose ("the
# --token flag", "pass --password to be asked"). So a password starting with "-" or "$" is not
# masked in text (in an argument list, see _mask_argument, only another flag or a variable is no
# value). The flag is found from its first dash, which must not follow a letter or a dash: each
# start is tried once, and looks at a bounded flag (up to 8 parts before the name, 32 characters
# each: a run of "a-a-a" after " --" was scanned and given back part by part), and the value
# cannot start with the spaces before it, so the search stays linear.
_ARG_START: Final = r"-(?<![^\s\"'`(\[,]-)"
_CLI_SECRET_NAMES: Final = (
    r"passw(?:or)?d|passphrase|passcode|pass(?:in|out)?|(?:src|dest)?(?:store|key)pass"
    r"|token|secret|api[_-]?key|(?:access|secret)[_-]?key|auth|credentials?"
)
_CLI_SECRET_FLAG: Final = (
    r"-?(?!(?:no|ask|prompt|skip|with|without|disable|enable|show|hide|print)[_-])"
    rf"(?:[a-z0-9]{{1,32}}[_-]){{0,8}}(?:{_CLI_SECRET_NAMES})"
)
_NO_VALUE: Final = r"(?![-<>|&;\[]|\$\{?[a-z_]\w*\}?(?![^\s\"'`]))"
# Words of prose and placeholders in documentation (--token YOUR_TOKEN, -u user:password,
# --password ***) are no value either: checked on what _CLI_FLAG matched (_keep_flag), since
# trying these alternatives at every flag was most of the cost of searching for it.
_PLACEHOLDER: Final = (
    r"(?:passw(?:or)?d|pass|secret|token|pwd?|api[_-]?key|your[_-][\w-]*|x{3,}|\*{3,}|\.{3}|…)"
    r"[.,;:!?)\]]*"
)
_PROSE_AFTER_FLAG: Final = (
    r"(?:flags?|options?|arg(?:ument)?s?|param(?:eter)?s?|switch|values?|is|to|or|and|the|an?|with|for"
    r"|if|when|which|that|instead|can|must|should|will|only|also|not|from|in|of|on|as)[.,;:!?)]*"
)
_NOT_A_VALUE: Final = re.compile(f"{_PROSE_AFTER_FLAG}|{_PLACEHOLDER}", re.IGNORECASE)
_MAX_NOT_A_VALUE: Final = 32
# A quoted argument runs to its closing quote or the end of the line (escapes skipped; an
# unclosed one is masked to the end of the line); a bare one to the next space or quote.
# (One alternative per quote: a character class is several times faster than a look-ahead for
# the quote, a back-reference, at each character.)
_ARG_VALUE: Final = (
    r"(?P<value>\"(?:[^\"\\\n]|\\[^\n])*\"?|'(?:[^'\\\n]|\\[^\n])*'?|`(?:[^`\\\n]|\\[^\n])*`?"
    r"|[^\s\"'`]+)"
)
# Case-insensitive after the first dash: a pattern compiled with re.IGNORECASE is not searched
# for quickly by its first character, and was ten times slower on text with many dashes.
# The flag is matched in a look-ahead and taken as matched, (?=(?P<flag>...))(?P=flag): a look-ahead
# is atomic, so a value that is no value fails at once instead of trying the flag's other splits.
_CLI_FLAG: Final = re.compile(
    rf"(?P<head>{_ARG_START}(?=(?P<flag>(?i:{_CLI_SECRET_FLAG})[ \t]+))(?P=flag))"
    rf"(?i:{_NO_VALUE}){_ARG_VALUE}"
)
# curl's -u/--user and -U/--proxy-user user:password (and --user=user:password): the user is
# kept, the password masked; "-u alice" has none (curl asks for it). Two numbers are a uid:gid
# (docker run -u 1000:1000), not a user and a password.
_USER_FLAG: Final = re.compile(
    rf"(?P<head>{_ARG_START}(?:[uU]|-user|-proxy-user)(?:[ \t]+(?![ \t])|=)"
    r"(?P<q>[\"'])?(?!\d+:\d+[.,;:!?)\]]*(?![^\s\"'`]))[^\s:\"'\\]*:)"
    rf"(?!\$|<|(?i:{_PLACEHOLDER})(?![^\s\"'`]))(?(q)(?:(?!(?P=q))[^\\\n]|\\[^\n])+(?P<end>(?P=q))?|[^\s\"'`]+)"
)
_CLI_GATES: Final = (  # (the literal a flag's name ends with, what is around it)
    ("pass", r"(?:(?<=[-_]pass)(?:w(?:or)?d|phrase|code|in|out)?|(?<=storepass)|(?<=keypass))[ \t]"),
    ("token", r"(?<=[-_]token)[ \t]"),
    ("secret", r"(?<=[-_]secret)[ \t]"),
    ("key", r"(?:(?<=[-_]key)|(?<=[-_]apikey)|(?<=[-_]accesskey)|(?<=[-_]secretkey))[ \t]"),
    ("auth", r"(?<=[-_]auth)[ \t]"),
    ("credential", r"(?<=[-_]credential)s?[ \t]"),
)
_ARGUMENT_FLAG: Final = re.compile(rf"-{_CLI_SECRET_FLAG}", re.IGNORECASE)
"""A flag, alone in an argument list, whose next argument is a secret (["mysql", "--password", "x"])."""
_USER_ARGUMENT_FLAG: Final = re.compile(r"-[uU]|--user|--proxy-user")
_UID_GID: Final = re.compile(r"\d+:\d+")
_ARGUMENT_NO_VALUE: Final = re.compile(r"-|\$\{?[A-Za-z_]\w*\}?\Z")


_NO_FLAG: Final = 0
_SECRET_FLAG: Final = 1
_USER_FLAG_ARGUMENT: Final = 2
_MAX_FLAG_LENGTH: Final = 64


def _argument_flag(item: object) -> int:
    """What the argument after ``item``, an item of a list, is: a secret (``--password``), a user
    and password (``-u``), or nothing to mask."""
    if type(item) is not str or not item.startswith("-") or len(item) > _MAX_FLAG_LENGTH:
        return _NO_FLAG
    if _USER_ARGUMENT_FLAG.fullmatch(item) is not None:
        return _USER_FLAG_ARGUMENT
    return _SECRET_FLAG if _ARGUMENT_FLAG.fullmatch(item) is not None else _NO_FLAG


def _mask_argument(flag: int, argument: str) -> str:
    """``argument``, the (converted) item after a flag in a list, masked as ``flag`` says: whole, or
    after the user. Another flag or a variable ($TOKEN) is no value."""
    if not argument or isinstance(argument, _More) or _ARGUMENT_NO_VALUE.match(argument) is not None:
        return argument
    if flag == _SECRET_FLAG:
        return REDACTED
    user, colon, password = argument.partition(":")
    if not password or _UID_GID.fullmatch(argument) is not None:
        return argument
    return user + colon + REDACTED


def _keep_flag(match: re.Match[str]) -> str:
    """The flag kept, its value masked; a quoted value keeps its quotes (_CLI_FLAG)."""
    value = match.group("value")
    quote = value[0] if value[0] in "\"'`" else ""
    if not quote and len(value) <= _MAX_NOT_A_VALUE and _NOT_A_VALUE.fullmatch(value) is not None:
        return match.group()
    closed = len(value) > 1 and value[-1] == quote
    return match.group("head") + quote + REDACTED + (quote if closed else "")


def _keep_user(match: re.Match[str]) -> str:
    """The flag and the user kept, the password masked; a quoted one keeps its quotes (_USER_FLAG)."""
    return match.group("head") + REDACTED + (match.group("end") or "")


# MySQL's and MariaDB's client tools take the password attached to -p (mysql -uroot -psecret,
# -p'a b'), and people write "-p secret" too (which mysql reads as -p, asking for the password,
# then a database: masked all the same). -p is a port (ssh, docker run -p 8080:80) or a switch (ls
# -p) to other tools, so it is masked only inside a mysql command: from a mysql, mysqldump,
# mysqladmin... or mariadb command word, lower case as shells spell it, to the end of the command
# (a newline, ; | or & outside quotes; an unclosed quote runs to the end of the line). No value,
# as for --password X: another flag, shell syntax, a variable, a placeholder (-pYOUR_PASSWORD,
# -p***: not "secret" or "password", which are passwords in examples too) or, after a space, a word
# of prose ("mysql -p to be asked"). The command is matched once, to its end, and its -p flags
# found in it: linear (a quoted part that does not close is scanned to the end of its line once,
# and the command then ends there).
_MYSQL_COMMAND: Final = (
    r"(?:mysql(?:dump|admin|import|check|show|pump|slap|binlog)?"
    r"|mariadb(?:-(?:dump|admin|import|check|show|binlog))?)(?:\.exe)?"
)
_MYSQL_RUN: Final = re.compile(
    rf"(?<![\w.-]){_MYSQL_COMMAND}(?![\w.-])"
    r"(?:[^\n;|&\"'`]|\"(?:[^\"\\\n]|\\[^\n])*\"|'(?:[^'\\\n]|\\[^\n])*'|`(?:[^`\\\n]|\\[^\n])*`)*"
    r"(?:[\"'`][^\n]*)?"
)
_MYSQL_PASSWORD: Final = re.compile(rf"(?<![^\s\"'`(\[,])-p(?P<gap>[ \t]*)(?i:{_NO_VALUE}){_ARG_VALUE}")
_MYSQL_ARGUMENT: Final = re.compile(rf"(?:.*[/\\])?{_MYSQL_COMMAND}")
"""An argument-list item that is a mysql command (["mysql", "-psecret"]), perhaps with its path."""
_MAX_COMMAND_LENGTH: Final = 256
# Placeholders after -p are those that cannot be a password: "mysql -psecret" is the usual example
# of one given on the command line, and masked.
_MYSQL_PLACEHOLDER: Final = r"(?:your[_-][\w-]*|x{3,}|\*{3,}|\.{3}|…)[.,;:!?)\]]*"
_MYSQL_NOT_A_VALUE: Final = re.compile(f"{_PROSE_AFTER_FLAG}|{_MYSQL_PLACEHOLDER}", re.IGNORECASE)
_MYSQL_ATTACHED_NOT_A_VALUE: Final = re.compile(_MYSQL_PLACEHOLDER, re.IGNORECASE)


def _keep_mysql_password(match: re.Match[str]) -> str:
    """-p kept, its value masked, unless it is a placeholder (or, after a space, a word of prose)."""
    value = match.group("value")
    quote = value[0] if value[0] in "\"'`" else ""
    if not quote and len(value) <= _MAX_NOT_A_VALUE:
        words = _MYSQL_NOT_A_VALUE if match.group("gap") else _MYSQL_ATTACHED_NOT_A_VALUE
        if words.fullmatch(value) is not None:
            return match.group()
    closed = len(value) > 1 and value[-1] == quote
    return "-p" + match.group("gap") + quote + REDACTED + (quote if closed else "")


def _mask_mysql(match: re.Match[str]) -> str:
    """A mysql command (_MYSQL_RUN) with the values of its -p flags masked."""
    return _MYSQL_PASSWORD.sub(_keep_mysql_password, match.group())


def _mask_mysql_argument(argument: str) -> str:
    """``argument``, an item after a mysql command in an argument list, with a password attached to
    -p masked (a separate item after -p is a database to mysql, and kept)."""
    if len(argument) <= 2 or isinstance(argument, _More) or _ARGUMENT_NO_VALUE.match(argument, 2) is not None:
        return argument
    return "-p" + REDACTED


# Prose: "the password is hunter2", "my API key is: sk...", "the password for bob was changed to
# Tr0ub4dor&3", "the access token is 'abc'". A name (password, passphrase, passcode; secret; API,
# access or secret key; an access, API, auth, bearer, refresh, bot, session, id... token: not a bare
# "token", which in prose about models is a piece of text), perhaps "for"/"of" and up to three
# words, then "is"/"was" (now, still, set to, changed to) or "set/changed/reset/updated to", or a
# colon after such words or after a key or token name, and the value. A quoted value is masked
# whatever it is. A bare one only if it looks like a credential: at least 4 characters, no URL, and
# not a plain word ("incorrect", "Required.", "short-lived", "JWT", "e.g.", "LangSmith"): so "the
# password is incorrect" and "the token is valid for 3600 seconds" are kept. A plain word has
# letters only, at most 15 (and up to two more such parts joined by - or .): a longer one, or one
# with a digit or a symbol, is masked; after a password's name, a plain word is masked too unless
# it reads as something said of the password (see _PROSE_WORD below).
#
# They are found in the lower-cased text (the positions are the text's: see _lower_aligned), by
# patterns that start with the trigger, a literal, and look behind it for the start of a word and
# for the word before a "key" or a "token". The name and its link (the head) are matched in a
# look-ahead, atomic: a value that fails does not make the head try its other splits, so each
# head is tried once and the search stays linear.
_PROSE_QUALIFIED: Final = {  # trigger: words that make it a credential's name, before it
    "key": ("api", "access", "secret"),
    "token": (
        "access", "api", "auth", "bearer", "refresh", "bot", "session", "id", "oauth", "personal",
        "security", "github", "gitlab", "slack", "discord", "telegram", "hf", "my", "your", "our",
    ),
}  # fmt: skip


def _qualified(trigger: str, words: tuple[str, ...]) -> str:
    """Look-behinds, after ``trigger``, for one of ``words`` (starting a word) before it, joined by a
    space, a - or nothing (not a _: "api_key is None" is code); first a look-ahead for what may follow
    a name, which rules out most occurrences ("tokens") at once. One look-behind per width: each
    must have a fixed width."""
    widths: dict[int, list[str]] = {}
    for word in words:
        for separator in (" ", "-", ""):
            widths.setdefault(len(word + separator), []).append(re.escape(word + separator))
    behind = "|".join(
        f"(?<=(?<![a-z0-9_])(?:{'|'.join(names)}){re.escape(trigger)})" for names in widths.values()
    )
    return rf"(?=[ \t:])(?:{behind})"


def _prose_link(bare_colon: bool) -> str:
    """What joins a name to its value: "for bob" or "of the admin account" perhaps, then "is" (or
    "was", "is now", "was set to", "changed to"...) or, after such words, a colon. A colon right
    after the name only if ``bare_colon``: "password: ..." is _NAME_VALUE's, which masks the line."""
    qualifier = r"[ \t]+(?:for|of)(?:[ \t]+[\w.@-]{1,64}){1,3}?"
    verb = (
        r"[ \t]+(?:(?:is|was)(?:[ \t]+(?:now|still))?(?:[ \t]+(?:set|changed))?(?:[ \t]+to)?"
        r"|(?:set|changed|reset|updated)[ \t]+to)(?:[ \t]*:[ \t]*|[ \t]+)"
    )
    colon = r"[ \t]*:[ \t]*"
    link = rf"(?:(?:{qualifier})?{verb}|{qualifier}{colon}{f'|{colon}' if bare_colon else ''})(?![ \t])"
    return rf"(?=(?P<link>{link}))(?P=link)"


_PROSE_NAMES: Final = {  # trigger: (look-behinds after it, what follows it, a colon may follow it)
    "pass": (r"(?<![a-z0-9_]pass)", r"(?:w(?:or)?d|phrase|code)", False),
    "secret": (r"(?<![a-z0-9_]secret)", "", False),
    **{trigger: (_qualified(trigger, words), "", True) for trigger, words in _PROSE_QUALIFIED.items()},
}
_MASKED_WORD: Final = r"\[redacted\][.,;:!?)]*(?![^\s\"'`])"
"""A value masked already, perhaps with the punctuation after it kept ("the password is [REDACTED].")."""
_PLAIN_WORD: Final = r"[a-z]{1,15}(?:[-.][a-z]{1,15}){0,2}[.,;:!?)]*(?![^\s\"'`])"
_PROSE_VALUE: Final = (
    r"(?P<value>\"(?:[^\"\\\n]|\\[^\n])+\"?|'(?:[^'\\\n]|\\[^\n])+'?|`(?:[^`\\\n]|\\[^\n])+`?"
    rf"|(?!{_PLAIN_WORD}|[a-z][a-z0-9+.-]*://|{_MASKED_WORD})(?=[^\s\"'`]{{4}})[^\s\"'`]+)"
)
# A password of letters only ("the password is hunter", "my passphrase was swordfish") is masked
# after a password's name (password, passphrase, passcode; a secret, key or token is not a word),
# unless the word reads as something said of a password rather than the password itself: a word of
# _PREDICATES ("wrong", "valid", "empty", "same", "longer", "kept"...), a word ending as adjectives,
# participles and adverbs do (_reads_as_predicate: "required", "stored", "missing", "optional",
# "sensitive", "usually"), or a word followed by a preposition or a determiner ("unique to each
# user", "kept in the vault"). Of a hyphenated word, the last part decides ("case-sensitive",
# "short-lived"), or a first part such as "non" or "well". So a password of letters only that reads
# like such a word ("the password is amazing", "the password is unique") is kept: the price of
# keeping prose readable, as that of passphrases of several unquoted words. The word and what
# follows it are bounded (15 letters a part, 8 punctuation marks or spaces): each head is still
# tried once.
_PROSE_WORD: Final = (
    r"(?=[a-z-]{4})(?P<word>[a-z]{1,15}(?:-[a-z]{1,15}){0,2})(?=[.,;:!?)]{0,8}(?:[\s\"'`]|\Z))"
    r"(?=(?P<next>[ \t]{1,8}[a-z]{1,16}(?![a-z])|))"
)
_PREDICATES: Final = frozenset((  # what is said of a password, and words that start a predicate
    "about", "above", "absent", "active", "after", "again", "against", "alive", "almost", "already",
    "also", "always", "another", "anything", "around", "away", "basic", "being", "below", "beside",
    "between", "beyond", "blank", "both", "case", "clear", "cleartext", "common", "complex", "constant",
    "correct", "current", "default", "different", "distinct", "done", "down", "during", "each", "easy",
    "easier", "either", "empty", "enough", "equal", "even", "ever", "every", "everything", "except",
    "expire", "fake", "false", "fine", "first", "found", "free", "fresh", "from", "full", "generic",
    "given", "gone", "good", "great", "half", "hard", "harder", "here", "hidden", "held", "identical",
    "important", "incorrect", "inside", "insecure", "insufficient", "invalid", "just", "kept", "known",
    "last", "later", "least", "less", "like", "local", "long", "longer", "lost", "made", "mandatory",
    "mine", "more", "most", "much", "near", "necessary", "never", "next", "none", "normal", "nothing",
    "null", "numeric", "obsolete", "obvious", "okay", "only", "open", "optional", "other", "ours", "over",
    "part", "permanent", "plain", "plaintext", "present", "private", "public", "random", "rather", "ready",
    "real", "recent", "redundant", "relevant", "required", "right", "safe", "safer", "same", "secure",
    "sent", "separate", "short", "shorter", "shown", "similar", "simple", "simpler", "some", "something",
    "sometimes", "soon", "stable", "stale", "static", "still", "strong", "stronger", "such", "sufficient",
    "super", "sure", "taken", "temporary", "than", "that", "their", "theirs", "then", "there", "these",
    "this", "those", "through", "together", "total", "true", "under", "unique", "unknown", "unset",
    "until", "upon", "usable", "used", "valid", "very", "weak", "weaker", "well", "what", "whatever",
    "when", "where", "which", "while", "written", "wrong", "yours", "broken", "chosen", "forgotten",
    "stolen", "spoken", "proven", "frozen", "driven", "mistaken", "overwritten", "better", "worse",
    "bigger", "smaller", "older", "newer", "sooner", "whether", "neither", "four", "five", "seven",
    "eight", "nine", "eleven", "twelve", "twenty", "sixteen", "thirty", "hundred", "your", "hers", "whose",
    "unsafe", "alphanumeric", "specific", "dynamic", "automatic", "cryptic", "equivalent", "consistent",
    "inconsistent", "independent", "dependent", "apparent", "evident", "persistent", "transient",
    "efficient", "significant", "irrelevant",
))  # fmt: skip
_PREDICATE_PREFIXES: Final = frozenset(("non", "well", "case", "self", "semi", "auto", "multi", "pre", "re"))
_PREDICATE_ENDINGS: Final = ("ous", "ful", "less", "tive", "sive", "ial", "ical", "onal", "ual", "arily")
_FOLLOWERS: Final = frozenset((
    "to", "in", "into", "by", "with", "from", "than", "of", "the", "this", "that", "these", "those", "your",
    "their", "every", "each",
))  # fmt: skip
"""Words after which the word before them is what is said of a password ("unique to each user")."""


def _reads_as_predicate(word: str, following: str) -> bool:
    """Whether ``word``, a letters-only value after a password's name (with ``following``, the next
    word if only spaces come between), is something said of the password, not the password."""
    if following.lstrip(" \t") in _FOLLOWERS:
        return True
    first, _, last = word.rpartition("-")
    if first and first.partition("-")[0] in _PREDICATE_PREFIXES:
        return True
    if last in _PREDICATES or last.endswith(_PREDICATE_ENDINGS):
        return True
    size = len(last)
    return (
        (last.endswith("ed") and not last.endswith("eed"))
        or (last.endswith(("able", "ible")) and size >= 7)
        or (last.endswith("ing") and size >= 7)
        or (last.endswith("ly") and size >= 6 and not last.endswith(("fly", "ily")))
    )


_PROSE_HEADS: Final = tuple(
    (
        trigger,
        _gate(
            trigger,
            behind
            + rest
            + _prose_link(bare_colon)
            + (f"(?:{_PROSE_VALUE}|{_PROSE_WORD})" if trigger == "pass" else _PROSE_VALUE),
        ),
    )
    for trigger, (behind, rest, bare_colon) in _PROSE_NAMES.items()
)
"""(trigger, pattern) of the secrets told in prose, searched for in the lower-cased text."""


def _mask_prose(text: str, folded: str, pattern: re.Pattern[str]) -> str:
    """``text`` with the values ``pattern`` finds in ``folded`` (aligned with it) masked."""
    pieces: list[str] = []
    done = 0
    for found in pattern.finditer(folded):
        value = found.group("value")
        if value is None:  # a word of letters only: masked unless it reads as a predicate
            if _reads_as_predicate(found.group("word"), found.group("next")):
                continue
            pieces += (text[done : found.start("word")], REDACTED)
            done = found.end()
            continue
        quote = value[0] if value[0] in "\"'`" else ""
        closed = len(value) > 1 and value[-1] == quote
        pieces += (text[done : found.start("value")], quote, REDACTED, quote if closed else "")
        done = found.end()
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


# Rules: (trigger, gate, pattern, replacement). A rule runs only on text containing its trigger
# substring, in which its gate, if any, also finds something: most text pays one substring search
# per rule. A single combined regex would try every alternative at every position and be several
# times slower; so is a pattern that starts with \b, a look-behind or a character class, hence the
# gates, which start with a literal. _FOLDED_RULES look for their trigger and gate in the
# lower-cased text.
_Rule: TypeAlias = "tuple[str, re.Pattern[str] | None, re.Pattern[str], str | Callable[[re.Match[str]], str]]"
_CASED_RULES: Final[tuple[_Rule, ...]] = (
    ("-", _HYPHENATED_KEYS[0], _HYPHENATED_KEYS[1], REDACTED),
    ("_", _UNDERSCORED_KEYS[0], _UNDERSCORED_KEYS[1], REDACTED),
    (  # Google API keys, AWS access key ids
        "A",
        None,
        re.compile(r"A(?<=\bA)(?:Iza[0-9A-Za-z_-]{30,}|(?:KIA|SIA)[0-9A-Z]{16}\b)"),
        REDACTED,
    ),
    ("ya29.", None, re.compile(r"ya29\.(?<=\bya29\.)[A-Za-z0-9_-]{20,}"), REDACTED),  # Google OAuth
    (
        "SG.",
        None,
        re.compile(r"SG\.(?<=\bSG\.)[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{32,}"),
        REDACTED,
    ),  # SendGrid
    (  # Slack incoming webhooks and workflow triggers: the path is the credential
        "://",
        None,
        re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9_/-]+"),
        _KEEP_PREFIX,
    ),
    # JWT: header.payload.signature, header and payload JSON objects in base64url ("eyJ" is '{"').
    # It starts at a word boundary, and "-" is both a boundary and a base64url character: tried at
    # every "-eyJ" of a long run ("-eyJ-eyJ..."), the header scanned to the end of the run each
    # time, which was quadratic. Only the start of a run (or of a dot-separated part) is tried,
    # skipping to the run's first candidate: a later one in the same run ends where it ends, so it
    # matches only if the first does.
    (".eyJ", None, _JWT, _KEEP_PREFIX),
    (  # credentials in URL parameters, such as ?api_key=, &client_secret=, Azure SAS &sig=
        "=",
        None,
        re.compile(
            r"([?&](?i:[a-z0-9_.-]*?(?:api[_-]?key|token|secret|passw(?:or)?d|pwd|signature|credential)"
            r"|key|sig)=)[^&#\s\"'<>]+"
        ),
        _KEEP_PREFIX,
    ),
    ("://", None, re.compile(r"(://[^/\s:@]*:)[^/\s@]+(?=@)"), _KEEP_PREFIX),  # URL password (redis://:pw@)
    # curl -u user:password, --user, --proxy-user, -U
    ("-", re.compile(r"-(?:-(?:proxy-)?user|[uU])[ \t=]"), _USER_FLAG, _keep_user),
    # mysql -psecret, -p secret: only in a mysql command
    ("-", _gate("m", r"(?:ysql|ariadb)"), _MYSQL_RUN, _mask_mysql),
)
_FOLDED_RULES: Final[tuple[_Rule, ...]] = (
    (
        "bearer",
        _gate("bearer", r"\s+[a-z0-9._~+/-]{8}"),
        re.compile(r"\b((?i:bearer)\s+)[A-Za-z0-9._~+/-]{8,}=*"),
        _KEEP_PREFIX,
    ),
    ("authorization", _gate("authorization", _HEADER_GATE_END), _AUTHORIZATION, _keep_head),
    (  # PEM private keys, PGP private key blocks: all between the BEGIN and END lines
        "key",
        _gate("private key", "(?: block)?-----"),
        re.compile(
            r"(-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----)[\s\S]*?"
            r"(-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
        f"\\g<1>{REDACTED}\\g<2>",
    ),
    # --password X: tried where a gate finds the name that ends such a flag, after a - or _ (or
    # keytool's -storepass), followed by a space; once, whichever gates find something
    *((trigger, _gate(trigger, rest), _CLI_FLAG, _keep_flag) for trigger, rest in _CLI_GATES),
    (  # Azure storage and Service Bus connection strings: to the next ";", EntityPath=... stays
        "key",
        re.compile(r"key=(?<=accountkey=)|key=(?<=sharedaccesskey=)"),
        re.compile(r"((?<![A-Za-z0-9])(?:AccountKey|SharedAccessKey)=)[^;\s\"'`&,<>]+", re.IGNORECASE),
        _KEEP_PREFIX,
    ),
)


def _by_trigger(
    rules: tuple[_Rule, ...],
) -> tuple[tuple[str, tuple[tuple[re.Pattern[str] | None, re.Pattern[str], Any], ...]], ...]:
    """``rules`` grouped by trigger, in the order of their first rule: each trigger is looked for once."""
    return tuple(
        (
            trigger,
            tuple(
                (gate, pattern, replacement) for each, gate, pattern, replacement in rules if each == trigger
            ),
        )
        for trigger in dict.fromkeys(rule[0] for rule in rules)
    )


_CASED_GROUPS: Final = _by_trigger(_CASED_RULES)
_FOLDED_GROUPS: Final = _by_trigger(_FOLDED_RULES)
_FOLDED_TRIGGERS: Final = frozenset(trigger for trigger, _ in _FOLDED_GROUPS)
# The name=value rule (_NAME_VALUE) is tried only where a gate finds a name and a separator in the
# lower-cased text. Its names may end a word (PGPASSWORD), so it cannot start with a look-behind
# that skips the inside of words quickly, and searching the whole text with it was several times
# slower than these gates, each starting with a literal, (trigger, gate) as the rules above.
_NAME_GATES: Final = tuple(
    (trigger, tuple(re.compile(f"{name}(?={_HEADER_GATE_END})") for name in names))
    for trigger, names in (
        ("key", (r"api[_-]?key", r"subscription[_-]?key", r"access[_-]?key", r"private[_-]?key")),
        ("secret", (r"secret(?:[_-]?key)?",)),
        ("token", ("token",)),
        ("pass", (r"passw(?:or)?d|passphrase",)),
        ("pwd", ("pwd",)),
        ("auth", ("auth",)),
        ("credential", ("credentials?",)),
        ("cookie", ("cookies?",)),
    )
)
_SHORTEST_SECRET: Final = 5
"""Characters of the shortest text with something to mask ("pwd=x")."""


@lru_cache(maxsize=4096)
def _secret_level(key: str) -> int:
    normalised = _KEY_WORD_BOUNDARY.sub("_", key[:_MAX_KEY_LENGTH]).lower()
    if _SECRET_KEY.search(normalised) is not None:
        return _SECRET
    if _PASS_KEY.search(normalised) is not None:
        return _SECRET_IF_STRING
    if _KEY_KEY.search(normalised) is not None:
        return _SECRET_IF_CREDENTIAL_LIKE
    return _NOT_SECRET


def _masks(level: int, value: object) -> bool:
    """Whether ``value`` (converted) under a key of secret ``level`` is masked."""
    if level == _SECRET:
        return True
    if level == _NOT_SECRET or not isinstance(value, str) or not value:
        return False
    if level == _SECRET_IF_STRING:
        return True
    return _CREDENTIAL_LIKE.fullmatch(value) is not None and ("/" not in value or len(value) >= 40)


def _mask(text: str) -> str:
    if len(text) < _SHORTEST_SECRET:
        return text
    original = text
    folded = text.lower()  # before any masking, which adds no trigger
    for trigger, cased in _CASED_GROUPS:
        if trigger in text:
            for gate, pattern, replacement in cased:
                if gate is None or gate.search(text) is not None:
                    text = pattern.sub(replacement, text)
    present: set[str] = set()  # the folded triggers in the text, each looked for once
    applied: set[re.Pattern[str]] = set()  # a pattern of several rules (_CLI_FLAG) is applied once
    for trigger, folded_rules in _FOLDED_GROUPS:
        if trigger not in folded:
            continue
        present.add(trigger)
        for gate, pattern, replacement in folded_rules:
            if pattern not in applied and (gate is None or gate.search(folded) is not None):
                text = pattern.sub(replacement, text)
                applied.add(pattern)
    aligned = text is original and len(folded) == len(text)  # folded gives positions in text
    for trigger, head in _PROSE_HEADS:
        if (trigger in present if trigger in _FOLDED_TRIGGERS else trigger in folded) and head.search(
            folded
        ) is not None:
            if not aligned:
                folded, aligned = _lower_aligned(text), True
            masked = _mask_prose(text, folded, head)
            if masked is not text:  # the next heads are looked for in the masked text
                text, folded = masked, _lower_aligned(masked)
    if not (":" in folded or "=" in folded or "," in folded):
        return text  # no separator: no name=value pair (the cheap common case of prose)
    if not aligned:
        folded = _lower_aligned(text)  # the name gates give positions in the text
    starts = [
        name.start()
        for trigger, gates in _NAME_GATES
        if (trigger in present if trigger in _FOLDED_TRIGGERS else trigger in folded)
        for gate in gates
        for name in gate.finditer(folded)
    ]
    return _mask_names(text, folded, starts) if starts else text


def _lower_aligned(text: str) -> str:
    """``text.lower()`` one character for one, so that positions match: "İ" becomes "i", not "i̇"."""
    folded = text.lower()
    if len(folded) != len(text):
        folded = text.replace("\u0130", "i").lower()
        if len(folded) != len(text):  # another such character, in a later version of Unicode
            folded = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return folded


def _mask_names(text: str, folded: str, starts: list[int]) -> str:
    """``text`` with _NAME_VALUE masked, tried at ``starts``: where the gates found names in ``folded``."""
    pieces: list[str] = []
    done = 0
    for start in sorted(starts):
        if start < done:
            continue
        match = _NAME_VALUE.match(text, start)
        if match is not None:
            pieces += (text[done:start], _keep_head(match))
            done = match.end()
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


# --------------------------------------------------------------------------------------
# Inline media
# --------------------------------------------------------------------------------------
MAX_INLINE_MEDIA: Final = 64
"""Base64 characters of inline media recorded as they are; longer payloads become a placeholder."""
_MEDIA_TAG: Final = "base64,"
_MEDIA_HEADER: Final = re.compile(r"data:(?:[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[^;,\s]*)*;base64,")
_MAX_MEDIA_HEADER: Final = 256
_BASE64_RUN: Final = re.compile(r"([A-Za-z0-9+/_-]*)=*")


def media_placeholder(size: int) -> str:
    """What is recorded instead of ``size`` bytes of inline media (a data: URL's or a blob's)."""
    return f"[{size} bytes omitted]"


def _elide_media(text: str, window: int) -> str:
    """``text`` with the payload of every ``data:<mime>;base64,`` URL of more than MAX_INLINE_MEDIA
    characters replaced by a placeholder (``data:image/png;base64,[52340 bytes omitted]``).

    Only the first ``window`` characters of the result are looked at: the rest is cut anyway.
    Each payload is scanned to its end once, to keep the text after it and to give its size.
    """
    pieces: list[str] = []
    copied = 0  # text[:copied] is in pieces
    kept = 0  # characters in pieces
    start = 0
    while True:
        end = copied + window - kept + len(_MEDIA_TAG)  # where the result's first window chars end
        if end <= start:
            break
        tag = text.find(_MEDIA_TAG, start, end)
        if tag < 0:
            break
        payload = start = tag + len(_MEDIA_TAG)
        head = text.rfind("data:", max(copied, tag - _MAX_MEDIA_HEADER), tag)
        if head < 0 or _MEDIA_HEADER.fullmatch(text, head, payload) is None:
            continue
        run = _BASE64_RUN.match(text, payload)
        if run is None or run.end() - payload <= MAX_INLINE_MEDIA:
            continue
        placeholder = media_placeholder((run.end(1) - payload) * 3 // 4)
        pieces += (text[copied:payload], placeholder)
        kept += payload - copied + len(placeholder)
        copied = start = run.end()
    if not pieces:
        return text
    pieces.append(text[copied:])
    return "".join(pieces)


def _blob_content(value: object) -> str | None:
    """The placeholder for the ``content`` of a conventions blob part, or None to record it as is."""
    if isinstance(value, str):
        if len(value) <= MAX_INLINE_MEDIA:
            return None
        padding = 2 if value.endswith("==") else 1 if value.endswith("=") else 0
        return media_placeholder((len(value) - padding) * 3 // 4)
    if isinstance(value, (bytes, bytearray, memoryview)):
        size = memoryview(value).nbytes
        return media_placeholder(size) if 4 * ((size + 2) // 3) > MAX_INLINE_MEDIA else None
    return None


# --------------------------------------------------------------------------------------
# Conversion to JSON-compatible data
# --------------------------------------------------------------------------------------
class _Cut(str):
    """A string cut to its first ``kept`` characters plus a marker; ``full`` is the original length."""

    kept: int
    full: int


class _More(str):
    """Marker standing for ``dropped`` items cut from the end of a list or dict."""

    dropped: int


def _marker(removed: int) -> str:
    return f"…[truncated {removed} chars]"


def _cut(prefix: str, full: int) -> str:
    """``prefix``, the kept start of a string of ``full`` characters, followed by a truncation marker."""
    out = _Cut(prefix + _marker(full - len(prefix)))
    out.kept = len(prefix)
    out.full = full
    return out


def _source(text: str) -> tuple[str, int]:
    """The uncut start of ``text`` and the length of the string it was cut from."""
    if isinstance(text, _Cut):
        return text[: text.kept], text.full
    return text, len(text)


def _more(count: int) -> str:
    out = _More(f"[{count} more items truncated]")
    out.dropped = count
    return out


def _clean(text: str) -> str:
    """``text`` encodable as UTF-8 (lone surrogates replaced), as OTLP export requires. Keeps the length."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _label(value: object) -> str:
    """``<TypeName>``: what is recorded for an object that cannot be converted."""
    try:
        return f"<{type(value).__name__}>"
    except Exception:
        return "<object>"


def _name(function: object) -> str:
    try:
        name = getattr(function, "__qualname__", None)
    except Exception:
        name = None
    return name if isinstance(name, str) else _label(function)


_OPAQUE: Final = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    BaseException,
)


class _Converter:
    """One conversion to JSON-compatible data, with its bounds and what it had to cut."""

    def __init__(
        self,
        max_depth: int,
        *,
        max_string: int = _UNBOUNDED,
        max_key: int = _UNBOUNDED,
        budget: int = _UNBOUNDED,
        scrub: bool = False,
        media: bool = False,
    ) -> None:
        self.max_depth = max_depth
        self.max_string = max(max_string, 0)
        self.max_key = max(max_key, 0)
        self.budget = budget  # approximate characters left; collections stop growing at 0
        self.scrub = scrub
        self.media = media  # inline media (data: URLs, blob parts) replaced by placeholders
        self.truncated = False
        self._open: set[int] = set()  # ids of the containers being converted, to detect cycles

    def convert(self, value: Any, depth: int) -> Any:
        try:
            kind = type(value)
            if kind is str:
                if len(value) > self.max_string:
                    return self._text(value)
                if self.media and ";" in value and _MEDIA_TAG in value:
                    value = _elide_media(value, self.max_string)
                if not value.isascii():
                    value = _clean(value)
                if self.scrub:
                    value = _mask(value)
                self.budget -= len(value) + 2
                return value
            if value is None or kind is bool:
                self.budget -= 5
                return value
            if kind is int:
                return self._int(value)
            if kind is float:
                return self._float(value)
            if kind is dict:
                return self._entries(value, value.items(), len(value), depth)
            if kind is list or kind is tuple:
                return self._items(value, value, len(value), depth)
            return self._other(value, depth)
        except Exception:  # includes RecursionError; the object is replaced, not the whole value
            return _label(value)

    def _other(self, value: Any, depth: int) -> Any:
        if isinstance(value, _More):
            return value
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth + 1)
        if isinstance(value, int) and not isinstance(value, bool):
            return self._int(int.__int__(value))
        if isinstance(value, float):
            return self._float(float.__float__(value))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._bytes(value)
        if isinstance(value, Mapping):
            return self._entries(value, value.items(), len(value), depth)
        if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
            return self._items(value, value, len(value), depth)
        if isinstance(value, (datetime.date, datetime.time)):
            return self._text(value.isoformat())
        if isinstance(value, (uuid.UUID, decimal.Decimal, PurePath)):
            return self._text(str(value))
        if isinstance(value, _OPAQUE):
            return _label(value)
        if callable(getattr(type(value), "model_dump", None)):  # pydantic v2 models, duck-typed
            try:
                dumped = value.model_dump()
            except Exception:
                dumped = None
            if isinstance(dumped, dict):
                return self._entries(value, dumped.items(), len(dumped), depth)
        if dataclasses.is_dataclass(value):
            names = [field.name for field in dataclasses.fields(value)]
            return self._entries(value, ((name, getattr(value, name)) for name in names), len(names), depth)
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            public = [(k, v) for k, v in attributes.items() if not (isinstance(k, str) and k.startswith("_"))]
            return self._entries(value, public, len(public), depth)
        return _label(value)

    def _text(self, text: str) -> str:
        prefix, full = _source(text)
        if type(prefix) is not str:
            prefix = str.__str__(prefix)
        if self.media and prefix.find(_MEDIA_TAG, 0, self.max_string + len(_MEDIA_TAG)) >= 0:
            elided = _elide_media(prefix, self.max_string)  # before the cut: keeps what follows
            full += len(elided) - len(prefix)
            prefix = elided
        if len(prefix) > self.max_string:
            prefix = prefix[: self.max_string]
        cut = len(prefix) < full
        prefix = _clean(prefix)
        if self.scrub:
            masked = _mask(prefix)
            full += len(masked) - len(prefix)
            prefix = masked
        self.budget -= len(prefix) + 2
        if not cut:
            return prefix
        self.truncated = True
        return _cut(prefix, full)

    def _key(self, key: object) -> str:
        if type(key) is str and len(key) <= self.max_key and key.isascii():  # the common case, made fast
            self.budget -= len(key) + 4
            return key
        if isinstance(key, str):
            text = str.__str__(key)
        elif key is None or isinstance(key, (bool, int, float)):
            text = str(key)
        else:
            text = _label(key)
        if len(text) > self.max_key:
            text = text[: self.max_key] + "…"
            self.truncated = True
        self.budget -= len(text) + 4
        return _clean(text)

    def _int(self, value: int) -> Any:
        self.budget -= 8
        return value if value.bit_length() <= _MAX_INT_BITS else _label(value)

    def _float(self, value: float) -> Any:
        self.budget -= 8
        if math.isfinite(value):
            return value
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"

    def _bytes(self, value: bytes | bytearray | memoryview) -> str:
        data = memoryview(value).cast("B")
        size = data.nbytes
        take = min(size, (self.max_string // 4 + 1) * 3)  # enough bytes for max_string base64 characters
        encoded = base64.b64encode(data[:take]).decode("ascii")
        if take == size:
            return self._text(encoded)
        return self._text(_cut(encoded, 4 * ((size + 2) // 3)))

    def _open_container(self, container: object, depth: int) -> str | None:
        """A marker to use instead of ``container`` if it is too deep or already open (a cycle)."""
        if depth >= self.max_depth:
            self.truncated = True
            return MAX_DEPTH_REACHED
        if id(container) in self._open:
            return CYCLE
        self._open.add(id(container))
        return None

    def _entries(self, owner: object, entries: Iterable[tuple[Any, Any]], total: int, depth: int) -> Any:
        marker = self._open_container(owner, depth)
        if marker is not None:
            return marker
        try:
            out: dict[str, Any] = {}
            blob = self.media and type(owner) is dict and owner.get("type") == "blob"
            for index, (key, value) in enumerate(entries):
                if index >= MAX_ITEMS or self.budget <= 0:
                    out[MORE_KEY] = _more(total - index)
                    self.truncated = True
                    break
                name = self._key(key)
                if blob and name == "content":
                    placeholder = _blob_content(value)
                    if placeholder is not None:
                        self.budget -= len(placeholder) + 2
                        out[name] = placeholder
                        continue
                level = _secret_level(name) if self.scrub else _NOT_SECRET
                if level == _SECRET:
                    out[name] = REDACTED
                    continue
                converted = self.convert(value, depth + 1)
                out[name] = REDACTED if level and _masks(level, converted) else converted
            return out
        finally:
            self._open.discard(id(owner))

    @staticmethod
    def _secret_pair(pair: list[Any] | tuple[Any, ...]) -> bool:
        """``pair`` is a header as (name, value), such as ("Authorization", "Basic ..."), with a secret."""
        name, value = pair
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).decode("latin-1")
        if not isinstance(name, str) or _PAIR_NAME.fullmatch(name) is None:
            return False
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("latin-1")
        return isinstance(value, str) and _masks(_secret_level(name), value)

    def _items(self, owner: object, items: Iterable[Any], total: int, depth: int) -> Any:
        marker = self._open_container(owner, depth)
        if marker is not None:
            return marker
        try:
            if self.scrub and total == 2 and isinstance(owner, (list, tuple)) and self._secret_pair(owner):
                return [self.convert(owner[0], depth + 1), REDACTED]
            out: list[Any] = []
            flag = _NO_FLAG  # the item before was a flag whose argument is a secret (an argv list)
            mysql = False  # an item before was a mysql command: -psecret is a password
            for index, item in enumerate(items):
                if index >= MAX_ITEMS or self.budget <= 0:
                    out.append(_more(total - index))
                    self.truncated = True
                    break
                self.budget -= 2
                converted = self.convert(item, depth + 1)
                if self.scrub and type(converted) is str:
                    if flag:
                        converted = _mask_argument(flag, converted)
                    elif mysql and converted.startswith("-p"):
                        converted = _mask_mysql_argument(converted)
                    elif (
                        not mysql
                        and len(converted) <= _MAX_COMMAND_LENGTH
                        and ("mysql" in converted or "mariadb" in converted)
                    ):
                        mysql = _MYSQL_ARGUMENT.fullmatch(converted) is not None
                if self.scrub:
                    flag = _argument_flag(item)
                out.append(converted)
            return out
        finally:
            self._open.discard(id(owner))


def to_jsonable(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``value`` as JSON-compatible data (dict, list, str, int, float, bool, None). Never raises.

    Containers are converted recursively (tuples and sets become lists, keys become strings),
    pydantic models, dataclasses and objects with ``__dict__`` (public attributes) become dicts,
    NaN and infinities become strings, bytes become base64. Cycles become ``"[cycle]"``,
    containers deeper than ``max_depth`` ``"[max depth]"``, and collections keep their first
    :data:`MAX_ITEMS` items plus a marker. Anything else becomes ``"<TypeName>"``; ``repr`` is
    never called.
    """
    return _Converter(max_depth).convert(value, 0)


def scrub_secrets(value: Any) -> Any:
    """A JSON-compatible copy of ``value`` (as :func:`to_jsonable`) with credentials masked.

    The values of secret-looking keys (``api_key``, ``x-api-key``, ``Authorization``,
    ``Ocp-Apim-Subscription-Key``, ``password``, ``pwd``, ``token``, ``cookie``, ... but not token
    counts such as ``max_tokens``; also ``OPENAIAPIKEY``, ``PGPASSWORD``, ``X-Custom-Auth``,
    ``sessionid``) become ``"[REDACTED]"``, as do the string values of ``pass``
    and the generated-looking ones of ``key`` and ``*_key``, and the values of headers given as
    (name, value) pairs. Credentials inside strings are masked: bearer tokens, provider API keys
    (OpenAI, Anthropic, Groq, Perplexity, xAI, Hugging Face, Google, AWS key ids, GitHub, GitLab,
    Slack, Stripe, npm, Replicate, SendGrid, Shopify, DigitalOcean), Google OAuth client secrets,
    Slack webhook URLs, JWTs, PEM and PGP private keys, authorization headers written as text,
    ``api_key=...``/``"password": "..."``/``X-Custom-Auth: ...``/``Cookie: ...`` pairs, Azure
    ``AccountKey=``/``SharedAccessKey=``, credential URL parameters (``?key=``, ``&sig=``), URL
    passwords, command-line secrets (``--password X``, ``curl -u user:password``, mysql's
    ``-psecret`` and ``-p secret``, also as items of an argument list) and secrets told in prose
    ("the password is hunter2", "the password is hunter"). Never raises.
    """
    return _Converter(DEFAULT_MAX_DEPTH, scrub=True).convert(value, 0)


# Names: a model's name or a server's address comes from framework metadata and is recorded
# whatever the capture mode (span names, span and metric attributes, usage records), so a model
# given as a URL with credentials (https://user:token@host/model, http://host/v1?api_key=...) or a
# key pasted into a model string would leak there. The userinfo of a URL is dropped whole (a user
# alone may be a token: https://hf_...@host), then the name is masked as any string. Names are few
# and looked at on every model call: masked names are cached, so a plain name costs a dict look-up.
_URL_USERINFO: Final = re.compile(r"(?<=://)[^/\s]*@")
_NAME_WINDOW: Final = 1024
"""Characters of a name masked (and cached): more than any name is kept (see mask_name's limit)."""
_masked_names: BoundedCache[str, str] = BoundedCache(1024)


def mask_name(name: str, limit: int) -> str:
    """``name`` (a model name, a server address) cut to ``limit`` characters, without the userinfo
    of a URL (``https://user:token@host/model`` -> ``https://host/model``) and with credentials
    masked as in :func:`scrub_secrets` (``?api_key=[REDACTED]``, ``sk-...`` keys). A plain name
    (``gpt-4o-mini``, ``claude-3-5-sonnet-v2@20241022``) is returned as it is. Never raises: a name
    that cannot be masked becomes ``""``."""
    try:
        if type(name) is not str:
            name = str.__str__(name)  # a subclass's own __hash__ and __eq__ are not called
        if len(name) > _NAME_WINDOW:
            name = name[:_NAME_WINDOW]  # the cache holds no huge keys
        masked = _masked_names.get(name)
        if masked is None:
            plain = _URL_USERINFO.sub("", name) if "@" in name and "://" in name else name
            masked = _masked_names.remember(name, _mask(plain))
        return masked if len(masked) <= limit else masked[:limit]
    except Exception:
        logger.debug("a name could not be masked: it is not recorded", exc_info=True)
        return ""


# --------------------------------------------------------------------------------------
# Bounded serialisation
# --------------------------------------------------------------------------------------
_dumps: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
).encode
_encode_string: Final[Callable[[str], str]] = json.encoder.encode_basestring


def truncate_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` characters (marker included), and whether it was cut."""
    try:
        if not isinstance(text, str):
            return dumps_bounded(text, limit)
        prefix, full = _source(text)
        if full <= limit:
            return _clean(str.__str__(prefix)), False
        keep = limit - len(_marker(full))
        if keep < 0:
            return _clean(prefix[: max(limit, 0)]), True
        return _clean(prefix[:keep]) + _marker(full - keep), True
    except Exception:
        logger.debug("text could not be truncated", exc_info=True)
        return "", True


def dumps_bounded(value: Any, limit: int) -> tuple[str, bool]:
    """Compact JSON of ``to_jsonable(value)`` in at most ``limit`` characters, and whether it was cut.

    The text is always valid JSON. When it is too long, the longest strings are shortened first
    (each ending in ``…[truncated N chars]``), then items are dropped from the ends of lists and
    dicts (replaced by a ``[N more items truncated]`` marker); a hopeless case gives
    ``"[truncated]"``. Strings are cut to ``limit`` before anything is serialised, so huge
    inputs cost little. Never raises.
    """
    try:
        converter = _Converter(
            DEFAULT_MAX_DEPTH, max_string=limit, max_key=min(limit, _MAX_KEY_LENGTH), budget=_budget(limit)
        )
        tree = converter.convert(value, 0)
        text, truncated = _dumps_tree(tree, limit)
        return text, truncated or converter.truncated
    except Exception:
        logger.debug("content could not be serialised", exc_info=True)
        return _fallback(limit), True


def _dumps_tree(tree: Any, limit: int) -> tuple[str, bool]:
    """Bounded JSON of ``tree``, the output of a bounded conversion."""
    text = _dumps(tree)
    if len(text) <= limit:
        return text, False
    return _shrink(tree, len(text) - limit, limit), True


def _budget(limit: int) -> int:
    """How much of a value is converted at all: content beyond this could not be shown anyway."""
    return 2 * max(limit, 0) + 1024


def _fallback(limit: int) -> str:
    for text in (_TRUNCATED_JSON, '""', "0"):
        if len(text) <= limit:
            return text
    return ""  # nothing valid fits in fewer than one character


def _shrink(tree: Any, excess: int, limit: int) -> str:
    """JSON of ``tree``, which is ``excess`` characters too long, made to fit in ``limit``."""
    text = _fit_strings(tree, excess, limit)
    if text is not None:
        return text
    # Shortening strings is not enough: keep fewer items of every list and dict, as many as fit.
    best: str | None = None
    low, high = 0, MAX_ITEMS
    while low <= high:
        count = (low + high) // 2
        fewer = _rebuild(tree, None, count)
        text = _dumps(fewer)
        if len(text) > limit:
            text = _fit_strings(fewer, len(text) - limit, limit)
        if text is None:
            high = count - 1
        else:
            best, low = text, count + 1
    return best if best is not None else _fallback(limit)


def _fit_strings(tree: Any, excess: int, limit: int) -> str | None:
    """JSON of ``tree`` in ``limit`` characters by shortening its longest strings, or None."""
    sizes: list[_Size] = []
    _string_sizes(tree, sizes)
    for _ in range(_FIT_ATTEMPTS):
        cap = _water_level(sizes, excess)
        if cap is None:
            return None
        text = _dumps(_rebuild(tree, cap, None))
        if len(text) <= limit:
            return text
        excess += len(text) - limit  # the estimate of the escaped lengths was short
    return None


_Size = tuple[int, int, int, float]
"""Of a string: uncut characters, original length, current JSON length, JSON characters per character."""


def _string_sizes(node: Any, sizes: list[_Size]) -> None:
    if isinstance(node, str):
        if not isinstance(node, _More):
            prefix, full = _source(node)
            escaped = len(_encode_string(prefix)) - 2
            ratio = escaped / len(prefix) if prefix else 1.0
            sizes.append((len(prefix), full, escaped + len(node) - len(prefix), ratio))
    elif isinstance(node, list):
        for item in node:
            _string_sizes(item, sizes)
    elif isinstance(node, dict):
        for item in node.values():
            _string_sizes(item, sizes)


def _saving(sizes: list[_Size], cap: int) -> int:
    """JSON characters saved by cutting every string to ``cap`` characters (plus marker)."""
    saved = 0
    for kept, full, current, ratio in sizes:
        if kept > cap:
            saved += max(0, current - math.ceil(cap * ratio) - len(_marker(full - cap)))
    return saved


def _water_level(sizes: list[_Size], excess: int) -> int | None:
    """The longest string length that saves ``excess`` characters, or None if none does."""
    if not sizes or _saving(sizes, 0) < excess:
        return None
    low, high = 0, max(size[0] for size in sizes)  # saving(low) >= excess > saving(high)
    while high - low > 1:
        middle = (low + high) // 2
        if _saving(sizes, middle) >= excess:
            low = middle
        else:
            high = middle
    return low


def _rebuild(node: Any, cap: int | None, count: int | None) -> Any:
    """``node`` with strings cut to ``cap`` characters and lists and dicts cut to ``count`` items."""
    if isinstance(node, str):
        if cap is None or isinstance(node, _More):
            return node
        prefix, full = _source(node)
        if len(prefix) <= cap:
            return node
        shorter = _cut(prefix[:cap], full)
        return shorter if len(shorter) < len(node) else node
    if isinstance(node, list):
        items, dropped = node, 0
        if items and isinstance(items[-1], _More):
            items, dropped = items[:-1], items[-1].dropped
        if count is not None and len(items) > count:
            items, dropped = items[:count], dropped + len(items) - count
        out = [_rebuild(item, cap, count) for item in items]
        if dropped:
            out.append(_more(dropped))
        return out
    if isinstance(node, dict):
        entries, dropped = list(node.items()), 0
        if entries and entries[-1][0] == MORE_KEY and isinstance(entries[-1][1], _More):
            entries, dropped = entries[:-1], entries[-1][1].dropped
        if count is not None and len(entries) > count:
            entries, dropped = entries[:count], dropped + len(entries) - count
        rebuilt = {key: _rebuild(value, cap, count) for key, value in entries}
        if dropped:
            rebuilt[MORE_KEY] = _more(dropped)
        return rebuilt
    return node


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------
_failed_hooks: dict[int, Callable[[str, Any], Any]] = {}
"""Redaction hooks that failed (warned about once), by id; the hook is kept so that a new hook
reusing a freed one's id is not taken for it. Bounded: a process making hooks without end warns
again after ``_MAX_FAILED_HOOKS``."""
_MAX_FAILED_HOOKS = 64


def serialize_content(key: str, value: Any, policy: ContentPolicy) -> tuple[str, bool] | None:
    """Content for attribute ``key`` as (text, truncated), or None to record nothing.

    Structured values become JSON text; a plain string (after redaction) stays plain text.
    Inline media is not recorded: the base64 payload of a ``data:`` URL, or the ``content`` of a
    ``{"type": "blob"}`` part, of more than MAX_INLINE_MEDIA characters becomes
    ``[N bytes omitted]`` (the URL's ``data:<mime>;base64,`` and the part's other fields stay).

    scrub_secrets -> ``policy.redact`` -> dumps_bounded(``policy.max_attribute_length``). None
    when the redaction hook returns None, or if the pipeline itself fails (content is dropped
    rather than recorded unsafely). Never raises. It does not look at ``policy.mode``: callers
    check it first, and do no work at all when content is not captured.
    """
    try:
        limit = policy.max_attribute_length
        converter = _Converter(
            DEFAULT_MAX_DEPTH,
            max_string=limit + _SCRUB_MARGIN,
            max_key=_MAX_KEY_LENGTH,
            budget=_budget(limit),
            scrub=True,
            media=True,
        )
        content = converter.convert(value, 0)
        if policy.redact is not None:
            content = _redact(policy.redact, key, content)
            if content is None:
                return None
        if isinstance(content, str):  # plain text stays plain text (query text, a string result)
            text, truncated = truncate_text(content, limit)
        elif policy.redact is None:
            text, truncated = _dumps_tree(content, limit)
        else:
            text, truncated = dumps_bounded(content, limit)  # the hook may return anything
        return text, truncated or converter.truncated
    except Exception:
        logger.debug("content of %s dropped: it could not be serialised", key, exc_info=True)
        return None


def _redact(hook: Callable[[str, Any], Any], key: str, content: Any) -> Any:
    try:
        return hook(key, content)
    except Exception as exc:
        if _failed_hooks.get(id(hook)) is hook:
            logger.debug("content redaction hook failed on %s", key, exc_info=True)
        else:  # warn once per hook, not once per call (by identity: a new hook may reuse a freed id)
            if len(_failed_hooks) >= _MAX_FAILED_HOOKS:
                _failed_hooks.clear()
            _failed_hooks[id(hook)] = hook
            logger.warning(
                "The content redaction hook %s raised %s on %s: the content is replaced by %r",
                _name(hook),
                _label(exc),
                key,
                REDACTION_FAILED,
            )
            logger.debug("content redaction hook failure", exc_info=True)
        return REDACTION_FAILED
