//! A panic in a handler must not take the server down: tower-lsp polls handler futures inside
//! its own serve loop, so one panic there would end the process. This service wraps tower-lsp's
//! and turns a panicking handler into an internal-error response (for a request) or a logged
//! error (for a notification). The shared state survives: its lock is always taken in a way that
//! ignores poisoning.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tower_lsp_server::jsonrpc::{Error as RpcError, ErrorCode, Request, Response};
use tower_service::Service;

pub struct CatchPanics<S>(pub S);

type Answer<E> = Pin<Box<dyn Future<Output = Result<Option<Response>, E>> + Send>>;

impl<S> Service<Request> for CatchPanics<S>
where
    S: Service<Request, Response = Option<Response>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Option<Response>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let id = request.id().cloned();
        let method = request.method().to_owned();
        // The call itself may panic too (it starts the handler).
        let answer = match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.call(request))) {
            Ok(answer) => answer,
            Err(panic) => {
                let response = failed(&method, id, panic.as_ref());
                return Box::pin(async move { Ok(response) });
            }
        };
        Box::pin(async move {
            match AssertUnwindSafe(answer).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Ok(failed(&method, id, panic.as_ref())),
            }
        })
    }
}

fn failed(
    method: &str,
    id: Option<tower_lsp_server::jsonrpc::Id>,
    panic: &(dyn std::any::Any + Send),
) -> Option<Response> {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!("the {method} handler panicked: {what}");
    id.map(|id| {
        Response::from_error(
            id,
            RpcError {
                code: ErrorCode::InternalError,
                message: format!("pyfill: the {method} handler failed: {what}").into(),
                data: None,
            },
        )
    })
}
