//! Outgoing e-mail: SMTP in production (lettre), or a mailbox directory of `.eml`
//! files in development and tests (`.keel/<profile>/mailbox`), which tests read.

use std::path::PathBuf;

use lettre::message::header::ContentType;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailTransport {
    /// An SMTP server, e.g. `smtp://localhost:25` or `smtps://user:pass@mail.example.com`.
    Smtp(String),
    /// A directory: one `.eml` file per message.
    Mailbox(PathBuf),
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The configured sender or a recipient is not a mailbox address.
    #[error("invalid address")]
    Address,
    /// The SMTP URL cannot be used.
    #[error("invalid SMTP URL")]
    Url,
    /// The transport failed.
    #[error("mail transport failed: {0}")]
    Transport(String),
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// Plain-text body; keep lines short (tokens on lines of their own) so tests can read them.
    pub body: String,
}

/// Sends mail.
#[derive(Clone)]
pub struct Mailer {
    from: String,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Mailbox(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.transport {
            Transport::Smtp(_) => "smtp",
            Transport::Mailbox(..) => "mailbox",
        };
        f.debug_struct("Mailer").field("transport", &kind).finish()
    }
}

impl Mailer {
    /// A mailer sending as `from` through `transport`. A mailbox directory is created.
    pub fn new(from: &str, transport: &MailTransport) -> Result<Self, MailError> {
        from.parse::<lettre::message::Mailbox>().map_err(|_| MailError::Address)?;
        let transport = match transport {
            MailTransport::Smtp(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|_| MailError::Url)?.build(),
            ),
            MailTransport::Mailbox(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| MailError::Transport(e.to_string()))?;
                Transport::Mailbox(AsyncFileTransport::<Tokio1Executor>::new(dir), dir.clone())
            }
        };
        Ok(Self { from: from.to_string(), transport })
    }

    /// Whether mail can go out now: the SMTP server answers (a connection and `NOOP`),
    /// or the mailbox directory exists.
    pub async fn reachable(&self) -> bool {
        match &self.transport {
            Transport::Smtp(smtp) => smtp.test_connection().await.unwrap_or(false),
            Transport::Mailbox(_, dir) => tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()),
        }
    }

    /// Sends `mail`. Errors name no address (they may be logged).
    pub async fn send(&self, mail: Mail) -> Result<(), MailError> {
        let message = Message::builder()
            .from(self.from.parse().map_err(|_| MailError::Address)?)
            .to(mail.to.parse().map_err(|_| MailError::Address)?)
            .subject(mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body)
            .map_err(|_| MailError::Address)?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await.map(drop).map_err(|e| MailError::Transport(e.to_string()))
            }
            Transport::Mailbox(files, _) => {
                files.send(message).await.map(drop).map_err(|e| MailError::Transport(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mailbox_is_reachable_while_its_directory_exists() {
        let dir = std::env::temp_dir().join(format!("keel-mail-test-{}", uuid::Uuid::new_v4().simple()));
        let mailer = Mailer::new("keel@example.com", &MailTransport::Mailbox(dir.clone())).expect("mailer");
        assert!(mailer.reachable().await);
        std::fs::remove_dir_all(&dir).expect("remove");
        assert!(!mailer.reachable().await);
    }

    #[tokio::test]
    async fn an_smtp_server_that_does_not_answer_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mailer =
            Mailer::new("keel@example.com", &MailTransport::Smtp(format!("smtp://127.0.0.1:{port}"))).expect("mailer");
        assert!(!mailer.reachable().await);
    }
}
