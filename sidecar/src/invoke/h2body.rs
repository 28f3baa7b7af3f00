//! HTTP/2 streams as `http` bodies and back, for the calls that stream through unchanged
//! (gRPC proxying, on both sides): [`Received`] reads an h2 stream as a body, [`pipe`] sends a
//! body on an h2 stream. Both keep to flow control: the window is given back as data is taken,
//! and data is sent only as fast as the other side grants.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;
use tonic::body::Body;

/// Sends `body` on `send`, as fast as the receiver's flow-control window allows; stops early
/// when the receiver resets the stream. An error is the reason to reset the stream with.
pub async fn pipe(body: &mut Body, send: &mut h2::SendStream<Bytes>) -> Result<(), h2::Reason> {
    loop {
        let frame = tokio::select! {
            frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)) => frame,
            _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => return Ok(()),
        };
        let frame = match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return Ok(());
            }
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::debug!(error = %error, "a body streamed through failed");
                return Err(h2::Reason::INTERNAL_ERROR);
            }
        };
        match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(n)) if n > 0 => n,
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return Ok(()), // the stream is gone
                    };
                    let piece = data.split_to(granted.min(data.len()));
                    if send.send_data(piece, false).is_err() {
                        return Ok(());
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                    return Ok(());
                }
            }
        }
    }
}

/// A body received on h2 (a request on the server, a response on the client): its data, then
/// its trailers; the window is given back as the data is taken.
pub struct Received {
    stream: h2::RecvStream,
    data_done: bool,
}

impl Received {
    pub fn new(stream: h2::RecvStream) -> Self {
        Self {
            stream,
            data_done: false,
        }
    }
}

impl http_body::Body for Received {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.stream.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => {
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}
