"""Invitation mail: over SMTP when a server is configured, else as .eml files in instance/outbox."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path


class MailError(Exception):
    """One message could not be delivered; the others go on."""


@dataclass(frozen=True)
class MailSettings:
    server: str | None
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    sender: str
    outbox: Path

    @classmethod
    def from_config(cls, config) -> "MailSettings":
        return cls(config.mail_server, config.mail_port, config.mail_username, config.mail_password,
                   config.mail_use_tls, config.mail_sender, config.instance_path / "outbox")


def invitation_message(sender: str, to: str, round_title: str, base_url: str, token: str,
                       code: str, reminder: bool) -> EmailMessage:
    """The invitation (or reminder) mail, in Chinese and English: the link, and the code with
    the page to type it on."""
    url, code_page = f"{base_url}/v/{token}", f"{base_url}/code"
    message = EmailMessage()
    message["From"], message["To"] = sender, to
    message["Subject"] = (("提醒：" if reminder else "") + f"民主测评邀请 / Evaluation invitation: {round_title}")
    message["Message-ID"] = make_msgid(domain="pingyi.local")
    note_zh = "此链接取代之前发给您的链接。\n" if reminder else ""
    note_en = "This link replaces the one sent before.\n" if reminder else ""
    message.set_content(
        f"您好！\n\n请通过以下链接参加“{round_title}”民主测评（匿名，仅可提交一次）：\n{url}\n\n"
        f"如无法打开链接，请在 {code_page} 输入代码：{code}\n{note_zh}\n"
        f"Hello,\n\nplease take part in the evaluation \"{round_title}\" (anonymous, one ballot):\n"
        f"{url}\n\nIf the link does not open, type this code at {code_page}: {code}\n{note_en}")
    return message


class Mailer:
    """Sends messages over one SMTP connection, or writes them to the outbox folder."""

    def __init__(self, settings: MailSettings):
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    @property
    def to_outbox(self) -> bool:
        return not self.settings.server

    def __enter__(self) -> "Mailer":
        if not self.to_outbox:
            s = self.settings
            self._smtp = smtplib.SMTP(s.server, s.port, timeout=30)
            if s.use_tls:
                self._smtp.starttls(context=ssl.create_default_context())
            if s.username:
                self._smtp.login(s.username, s.password or "")
        else:
            self.settings.outbox.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except smtplib.SMTPException:
                pass

    def send(self, message: EmailMessage) -> None:
        """Deliver one message; MailError if this recipient was refused."""
        if self.to_outbox:
            name = message["Message-ID"].strip("<>").replace("@", "_") + ".eml"
            (self.settings.outbox / name).write_bytes(bytes(message))
            return
        try:
            self._smtp.send_message(message)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError,
                smtplib.SMTPSenderRefused) as exc:
            raise MailError(str(exc)) from None
