"""Email rendering (minijinja, autoescaped HTML plus a plain-text part) and asynchronous SMTP delivery.

Each mail is a template in `templates/`: its HTML part (`<kind>.html`) fills the blocks of one layout, with the
layout's parts (`paragraph`, `button`, `footnote`), and its plain-text part (`<kind>.txt`) is written out. The layout
(`templates/build/layout.html`) is compiled by `just emails` from its MJML source, `templates/src/layout.mjml`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import html
import random
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import msgspec
import structlog
from minijinja import Environment, Markup

from app import tracing
from app.config import Settings
from app.metrics import count_email

log = structlog.get_logger("app.emails")
TEMPLATES = Path(__file__).resolve().parent / "templates"
SMTP_TIMEOUT_SECONDS = 10.0


class Email(msgspec.Struct, frozen=True):
    subject: str
    html: str
    text: str
    kind: str = ""  # the template's name, for the metrics


def _load(name: str) -> str | None:
    path = TEMPLATES / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


# Autoescaping follows the template name's extension: on for `.html`, off for `.txt`.
_env = Environment(loader=_load)


def _html_safe(value: object) -> object:
    """Strings escaped with the standard HTML rules. minijinja's own escaping also turns `/` into `&#x2f;`, which
    browsers undo but which hides the link from anyone reading or searching the HTML source; anything that is not
    a string is left to the template's autoescaping."""
    return Markup(html.escape(value, quote=True)) if isinstance(value, str) else value


def _render(settings: Settings, template: str, subject: str, email: str, **context: object) -> Email:
    """The mail `template` to `email`, whose subject follows the project's name. Every template may use
    `project_name`, `email` and `username` (the same address: the template's own templates call it that)."""
    context |= {"project_name": settings.PROJECT_NAME, "username": email, "email": email}
    return Email(
        subject=f"{settings.PROJECT_NAME} - {subject}",
        html=_env.render_template(f"{template}.html", **{key: _html_safe(value) for key, value in context.items()}),
        text=_env.render_template(f"{template}.txt", **context),
        kind=template,
    )


def reset_password_email(settings: Settings, email: str, token: str) -> Email:
    link = f"{settings.FRONTEND_HOST}/reset-password?token={token}"
    valid_hours = settings.EMAIL_RESET_TOKEN_EXPIRE_HOURS
    return _render(
        settings, "reset_password", f"Password recovery for user {email}", email, valid_hours=valid_hours, link=link
    )


def verify_email_email(settings: Settings, email: str, token: str) -> Email:
    link = f"{settings.FRONTEND_HOST}/verify-email?token={token}"
    valid_hours = settings.EMAIL_VERIFY_TOKEN_EXPIRE_HOURS
    return _render(
        settings, "verify_email", f"Email verification for user {email}", email, valid_hours=valid_hours, link=link
    )


def new_account_email(settings: Settings, email: str) -> Email:
    """The welcome mail. It never carries the password: the account's creator hands that over."""
    return _render(settings, "new_account", f"New account for user {email}", email, link=settings.FRONTEND_HOST)


def test_email(settings: Settings, email: str) -> Email:
    return _render(settings, "test_email", "Test email", email)


def http_header_value(subject: str) -> str:
    """A subject fit for an HTTP response header: as is when ASCII, else one RFC 2047 encoded word (HTTP header
    values are bytes read as Latin-1; anything else would fail the response)."""
    return subject if subject.isascii() else Header(subject, "utf-8").encode(maxlinelen=0)


class _Verbatim:
    """A header the email policy writes as it is given, neither parsed nor refolded from a parse. The policy's
    parser decodes RFC 2047 encoded words even in an address, where RFC 2047 forbids them: the stored address
    `=?utf-8?b?…?=@example.com` would go out as `To: x, victim@evil.co, y@example.com`. With `encoded`, the value
    is written as RFC 2047 encoded words, which decode to exactly the value (text that only looks like an
    encoded word included)."""

    def __init__(self, name: str, value: str, encoded: bool = False) -> None:
        if "\r" in value or "\n" in value:
            raise ValueError(f"a line break in the {name} header")
        self.name, self.value, self.encoded = name, value, encoded

    def fold(self, *, policy: Policy[Any]) -> str:
        """The whole header line, as the policy's own header objects fold themselves."""
        value = self.value
        if self.encoded:
            value = Header(value, "utf-8", header_name=self.name).encode(linesep=policy.linesep)
        return f"{self.name}: {value}{policy.linesep}"

    def __str__(self) -> str:
        return self.value


def _subject(subject: str) -> str | _Verbatim:
    """Our subjects carry the recipient's address as stored: one that looks like an encoded word is encoded, so
    that mail clients show it as stored rather than what it decodes to."""
    return _Verbatim("Subject", subject, encoded=True) if "=?" in subject else subject


def build_message(settings: Settings, to: str, email: Email) -> EmailMessage:
    """A multipart/alternative message: the plain-text part first, the HTML part preferred by capable clients.
    The recipient's header is the address exactly as stored (see `_Verbatim`), as the envelope's is."""
    sender = settings.EMAILS_FROM_EMAIL or ""
    message = EmailMessage()
    message["Subject"] = _subject(email.subject)
    message["From"] = Address(display_name=settings.emails_from_name, addr_spec=sender)
    message["To"] = _Verbatim("To", to)
    message["Date"] = format_datetime(datetime.now(UTC))
    # An explicit domain: without one, `make_msgid` asks the resolver for this host's name, blocking the loop.
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


class MailNotSent(Exception):
    """The mail server could not be reached, or refused the mail; the message says why (never the recipient)."""


async def deliver(settings: Settings, to: str, email: Email) -> None:
    """Deliver over SMTP, or raise MailNotSent. Either way counted and logged, with the recipient's domain (never the
    full address) and a reason. Mail that is not configured is skipped: logged, not raised."""
    domain = to.rpartition("@")[2]
    if not settings.emails_enabled:
        count_email(email.kind, "not_configured")
        log.warning(
            "email not sent: mail is not configured", subject_kind=_kind(email.subject), recipient_domain=domain
        )
        return
    smtp = {"server.address": settings.SMTP_HOST or "", "server.port": settings.SMTP_PORT, "email.kind": email.kind}
    try:
        with tracing.span("smtp send", smtp):
            await aiosmtplib.send(
                build_message(settings, to, email),
                # The envelope is explicit, so the recipient is exactly `to`, whatever its header parses into.
                sender=settings.EMAILS_FROM_EMAIL,
                recipients=[to],
                hostname=settings.SMTP_HOST,
                port=settings.SMTP_PORT,
                username=settings.SMTP_USER or None,
                password=settings.SMTP_PASSWORD or None,
                use_tls=settings.SMTP_SSL,
                start_tls=settings.SMTP_TLS and not settings.SMTP_SSL,
                timeout=SMTP_TIMEOUT_SECONDS,
            )
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".replace(to, f"<recipient at {domain}>")[:300]
        count_email(email.kind, "failed")
        log.warning("email not sent", subject_kind=_kind(email.subject), recipient_domain=domain, reason=reason)
        raise MailNotSent(reason) from None
    count_email(email.kind, "sent")
    log.info("email sent", subject_kind=_kind(email.subject), recipient_domain=domain)


async def send_email(settings: Settings, to: str, email: Email) -> None:
    """Deliver, for mail nobody waits for: a failure is counted and logged (by `deliver`), never raised."""
    with contextlib.suppress(MailNotSent):
        await deliver(settings, to, email)


# Mail waiting to be sent, at most, per worker process: beyond, a mail is dropped (logged, counted as failed) rather
# than held without bound while the mail server is down or slow. SMTP conversations at once, per worker process.
OUTBOX_SIZE = 1000
OUTBOX_SENDERS = 8
# Each mail's work (its token, rendering, the SMTP conversation) starts this long (seconds, at random) after it was
# posted: not right after the answer, when the same client's next request arrives, which would otherwise wait for
# that work on the event loop and tell by ~1 ms that the address of a recovery request is registered.
OUTBOX_DELAY = (0.01, 0.25)
Job = Callable[[], Coroutine[Any, Any, None]]


class Outbox:
    """Mail sent after the answer, by tasks of the process's own (started with the first mail), never by the
    request's: neither its answer nor the next request on its connection waits for a mail's work, however slow the
    mail server. Each mail runs in the context of the request that posted it (its request id in the logs, its span
    in the request's trace). On shutdown the mails already posted are sent, for up to `drain_seconds`."""

    def __init__(
        self,
        size: int = OUTBOX_SIZE,
        senders: int = OUTBOX_SENDERS,
        delay: tuple[float, float] = OUTBOX_DELAY,
        drain_seconds: float = SMTP_TIMEOUT_SECONDS + OUTBOX_DELAY[1],
    ) -> None:
        self._queue: asyncio.Queue[tuple[contextvars.Context, str, Job]] = asyncio.Queue(size)
        self._senders: list[asyncio.Task[None]] = []
        self._count, self._delay, self._drain_seconds = senders, delay, drain_seconds

    def post(self, kind: str, job: Job) -> bool:
        """Queue `job`, the whole work of one mail of `kind` (a template's name); False when the outbox is full (the
        mail is dropped)."""
        if not self._senders:  # in a context of their own, not the first request's
            self._senders = [
                asyncio.create_task(self._send(), name=f"outbox-{n}", context=contextvars.Context())
                for n in range(self._count)
            ]
        try:
            self._queue.put_nowait((contextvars.copy_context(), kind, job))
        except asyncio.QueueFull:
            count_email(kind, "failed")
            log.warning("email not sent: the outbox is full", kind=kind, size=self._queue.maxsize)
            return False
        return True

    async def _send(self) -> None:
        while True:
            context, kind, job = await self._queue.get()
            try:
                await asyncio.sleep(random.uniform(*self._delay))  # noqa: S311 (spreads work in time, not a secret)
                await asyncio.create_task(job(), context=context)
            except Exception:  # a job's own failures are its to log; this keeps the sender alive
                log.exception("email job failed", kind=kind)
            finally:
                self._queue.task_done()

    async def close(self) -> None:
        """Send what was posted (for `drain_seconds` at most), then stop the senders."""
        if self._senders:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self._drain_seconds)
        for sender in self._senders:
            sender.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders = []


def _kind(subject: str) -> str:
    """The subject without the recipient's address (our subjects end with it), fit for logs."""
    head, separator, _ = subject.partition(" for user ")
    return head if separator else subject
