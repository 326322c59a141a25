//! The HTTP transport under the S3 store: object_store's reqwest client, with one error
//! reclassified so that its retries cover it.
//!
//! hyper refuses a request with a *canceled* error when the connection it picked closed
//! before the request could be handed to it ("connection was not ready"); nothing of the
//! request was written. hyper retries that itself only on a reused pooled connection, and
//! object_store classifies the error as unknown and gives up, so a server or load balancer
//! that closes a fresh connection at once would fail a checkpoint upload. Such a request is
//! reported here as not sent ([`HttpErrorKind::Request`]), which object_store retries
//! under the configured retry limits like a refused connection.

use std::error::Error as StdError;
use std::fmt;

use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};

/// Builds reqwest clients whose unsent requests are retried (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct RetryUnsentConnector(ReqwestConnector);

impl HttpConnector for RetryUnsentConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(RetryUnsent(self.0.connect(options)?)))
    }
}

#[derive(Debug)]
struct RetryUnsent(HttpClient);

#[async_trait::async_trait]
impl HttpService for RetryUnsent {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.0.execute(request).await.map_err(reclassify)
    }
}

/// The error itself, or a [`HttpErrorKind::Request`] error when hyper never sent the request.
fn reclassify(err: HttpError) -> HttpError {
    if err.kind() == HttpErrorKind::Unknown && never_sent(&err) {
        HttpError::new(HttpErrorKind::Request, NotSent(err))
    } else {
        err
    }
}

/// Whether a hyper error in the chain says the request was canceled before it was sent.
fn never_sent(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// A request hyper canceled before sending; shows the original error's cause.
#[derive(Debug)]
struct NotSent(HttpError);

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.source() {
            Some(cause) => write!(f, "request not sent: {cause}"),
            None => write!(f, "request not sent: {}", self.0),
        }
    }
}

impl StdError for NotSent {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Plain;
    impl fmt::Display for Plain {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection reset")
        }
    }
    impl StdError for Plain {}

    #[test]
    fn errors_without_a_canceled_hyper_request_keep_their_kind() {
        for kind in [
            HttpErrorKind::Unknown,
            HttpErrorKind::Timeout,
            HttpErrorKind::Interrupted,
        ] {
            let err = reclassify(HttpError::new(kind, Plain));
            assert_eq!(err.kind(), kind);
            assert_eq!(err.to_string(), "HTTP error: connection reset");
        }
    }

    /// A hyper error for a request offered to a connection that had already closed.
    fn canceled_by_hyper() -> hyper::Error {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, server) = tokio::io::duplex(1024);
            let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, String>(
                hyper_util::rt::TokioIo::new(client),
            )
            .await
            .unwrap();
            drop(connection);
            drop(server);
            sender
                .send_request(hyper::Request::new(String::new()))
                .await
                .unwrap_err()
        })
    }

    #[test]
    fn a_request_hyper_never_sent_is_retried_as_unsent() {
        let canceled = canceled_by_hyper();
        assert!(canceled.is_canceled(), "{canceled}");
        let err = reclassify(HttpError::new(HttpErrorKind::Unknown, canceled));
        assert_eq!(err.kind(), HttpErrorKind::Request);
        assert!(
            err.to_string()
                .contains("request not sent: operation was canceled"),
            "{err}"
        );
    }
}
