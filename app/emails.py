"""Email rendering (minijinja, autoescaped HTML plus a plain-text part) and asynchronous SMTP delivery."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import msgspec
import structlog
from minijinja import Environment

from app.config import Settings

log = structlog.get_logger("app.emails")
TEMPLATES = Path(__file__).resolve().parent / "templates" / "build"


class Email(msgspec.Struct, frozen=True):
    subject: str
    html: str
    text: str


def _load(name: str) -> str | None:
    path = TEMPLATES / name
    return path.read_text() if path.is_file() else None


# Autoescaping follows the template name's extension: on for `.html`, off for `.txt`.
_env = Environment(loader=_load)


def _render(template: str, subject: str, **context: object) -> Email:
    return Email(
        subject=subject,
        html=_env.render_template(f"{template}.html", **context),
        text=_env.render_template(f"{template}.txt", **context),
    )


def reset_password_email(settings: Settings, email: str, token: str) -> Email:
    return _render(
        "reset_password",
        f"{settings.PROJECT_NAME} - Password recovery for user {email}",
        project_name=settings.PROJECT_NAME,
        username=email,
        email=email,
        valid_hours=settings.EMAIL_RESET_TOKEN_EXPIRE_HOURS,
        link=f"{settings.FRONTEND_HOST}/reset-password?token={token}",
    )


def new_account_email(settings: Settings, email: str) -> Email:
    return _render(
        "new_account",
        f"{settings.PROJECT_NAME} - New account for user {email}",
        project_name=settings.PROJECT_NAME,
        username=email,
        email=email,
        link=settings.FRONTEND_HOST,
    )


def test_email(settings: Settings, email: str) -> Email:
    return _render(
        "test_email", f"{settings.PROJECT_NAME} - Test email", project_name=settings.PROJECT_NAME, email=email
    )


async def send_email(settings: Settings, to: str, email: Email) -> None:
    """Deliver over SMTP. Runs after the response; failures are logged (recipient's domain only), never raised."""
    domain = to.rpartition("@")[2]
    if not settings.emails_enabled:
        log.info("email not sent: mail is not configured", subject=email.subject, recipient_domain=domain)
        return
    message = EmailMessage()
    message["Subject"] = email.subject
    message["From"] = f"{settings.emails_from_name} <{settings.EMAILS_FROM_EMAIL}>"
    message["To"] = to
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.SMTP_USER or None,
            password=settings.SMTP_PASSWORD or None,
            use_tls=settings.SMTP_SSL,
            start_tls=settings.SMTP_TLS and not settings.SMTP_SSL,
            timeout=10,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        log.warning("email not sent", subject=email.subject, recipient_domain=domain, reason=str(exc)[:200])
        return
    log.info("email sent", subject=email.subject, recipient_domain=domain)
