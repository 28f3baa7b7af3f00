//! Counting in-flight requests, so a shutdown can tell "requests still running" (wait, up to the
//! grace period) from "only idle keep-alive connections left" (close them and exit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// The number of requests being handled.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    pub fn enter(&self) -> Guard {
        self.0.fetch_add(1, Ordering::SeqCst);
        Guard(self.0.clone())
    }
}

/// Counts one request until dropped.
pub struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A tower layer that counts the requests of the service it wraps.
#[derive(Debug, Clone)]
pub struct Layer(pub InFlight);

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;
    fn layer(&self, inner: S) -> Service<S> {
        Service {
            inner,
            in_flight: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Service<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S, R> tower::Service<R> for Service<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let guard = self.in_flight.enter();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(guard);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer as _, Service as _, ServiceExt};

    #[tokio::test]
    async fn counts_requests_until_they_finish() {
        let in_flight = InFlight::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let inner = tower::service_fn(move |_: ()| {
            let rx = rx.clone();
            async move {
                if let Some(rx) = rx.lock().await.take() {
                    let _ = rx.await;
                }
                Ok::<_, std::convert::Infallible>(())
            }
        });
        let mut service = Layer(in_flight.clone()).layer(inner);
        let pending = service.ready().await.unwrap().call(());
        assert_eq!(in_flight.count(), 1);
        let task = tokio::spawn(pending);
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(in_flight.count(), 0);
    }
}
