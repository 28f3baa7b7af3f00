//! The operator API's update streams (`ComponentUpdate`, `ConfigurationUpdate`,
//! `SubscriptionUpdate`, `ResiliencyUpdate`, `HTTPEndpointUpdate`) framed without tonic's
//! per-stream encode buffer.
//!
//! tonic encodes a server stream's messages into one buffer per stream and keeps it, grown to
//! the largest message (a Component's JSON), for the life of the stream: ~2.4 KiB that every
//! idle sidecar connection holds (`docs/performance.md`). [`Streams`] sits in front of the
//! generated [`OperatorServer`]: for the update streams it decodes the request, calls the same
//! [`Operator`] method, and sends each event as a frame of its own exact size, freed once
//! written. Every other method goes to the generated server unchanged. The wire format is
//! gRPC's: `content-type: application/grpc`, each message behind a 5-byte prefix (compression
//! flag, big-endian length), `grpc-status` in the trailers, or a trailers-only response for an
//! error before the stream starts.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use daprs_api::grpc_frame;
use daprs_api::proto::operator::operator_server::{Operator, OperatorServer};
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::api::{EventStream, OperatorApi};

/// The largest request an update stream accepts (they carry a namespace, an app id, a name).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

type HttpResponse = http::Response<tonic::body::Body>;

/// The operator service with its update streams framed here (see the module documentation).
#[derive(Clone)]
pub struct Streams {
    api: OperatorApi,
    generated: OperatorServer<OperatorApi>,
}

impl Streams {
    pub fn new(api: OperatorApi) -> Self {
        Self {
            generated: OperatorServer::new(api.clone()),
            api,
        }
    }
}

impl tonic::server::NamedService for Streams {
    const NAME: &'static str = <OperatorServer<OperatorApi> as tonic::server::NamedService>::NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for Streams {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        // Each update stream: decode the request, call the same `Operator` method, frame here.
        macro_rules! framed {
            ($method:ident) => {{
                let api = self.api.clone();
                Box::pin(serve(request, move |r| async move { api.$method(r).await }))
            }};
        }
        match method {
            "ComponentUpdate" => framed!(component_update),
            "ConfigurationUpdate" => framed!(configuration_update),
            "SubscriptionUpdate" => framed!(subscription_update),
            "ResiliencyUpdate" => framed!(resiliency_update),
            "HTTPEndpointUpdate" => framed!(http_endpoint_update),
            _ => {
                let mut generated = self.generated.clone();
                Box::pin(async move { generated.call(request).await })
            }
        }
    }
}

/// Decodes the request, calls `method` and answers with its stream framed by [`Framed`].
async fn serve<Req, E, F, Fut>(
    request: http::Request<tonic::body::Body>,
    method: F,
) -> Result<HttpResponse, Infallible>
where
    Req: Message + Default,
    E: Message + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<EventStream<E>>, Status>>,
{
    let (parts, body) = request.into_parts();
    let message = match read_request::<Req>(body).await {
        Ok(message) => message,
        Err(status) => return Ok(status.into_http()),
    };
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    );
    match method(request).await {
        Ok(response) => {
            let (metadata, events, _) = response.into_parts();
            let mut response = http::Response::new(tonic::body::Body::new(Framed {
                events: Some(events),
            }));
            *response.headers_mut() = metadata.into_headers();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok(response)
        }
        Err(status) => Ok(status.into_http()),
    }
}

/// The one message of a unary request body.
async fn read_request<Req: Message + Default>(body: tonic::body::Body) -> Result<Req, Status> {
    let bytes = http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("failed to read the request: {e}")))?
        .to_bytes();
    decode_request(bytes)
}

fn decode_request<Req: Message + Default>(bytes: Bytes) -> Result<Req, Status> {
    let mut messages = match grpc_frame::split(bytes) {
        Ok(messages) => messages,
        Err(grpc_frame::FrameError::Compressed) => {
            return Err(Status::unimplemented(
                "compressed requests are not supported: send the request uncompressed",
            ));
        }
        Err(error) => {
            return Err(Status::invalid_argument(format!(
                "{error} (one message expected)"
            )));
        }
    };
    let message = match messages.len() {
        1 => messages.remove(0),
        0 => {
            return Err(Status::invalid_argument(
                "the request carries no message (a gRPC message starts with a 5-byte prefix)",
            ));
        }
        n => {
            return Err(Status::invalid_argument(format!(
                "the request carries {n} messages (one message expected)"
            )));
        }
    };
    Req::decode(message).map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
}

/// One event as a gRPC message: the 5-byte prefix and the message, in a buffer of exactly
/// that size.
fn frame<E: Message>(event: &E) -> Bytes {
    grpc_frame::encode(std::slice::from_ref(event))
}

/// The trailers that end a stream with `status` (`None`: OK).
fn trailers(status: Option<Status>) -> http::HeaderMap {
    let status = status.unwrap_or_else(|| Status::ok(""));
    let mut map = http::HeaderMap::new();
    if let Err(unencodable) = status.add_header(&mut map) {
        map = http::HeaderMap::new();
        let _ = Status::internal(format!(
            "the stream ended with a status that cannot be sent: {}",
            unencodable.code()
        ))
        .add_header(&mut map);
    }
    map
}

/// A response body that frames each event of an update stream on its own.
struct Framed<E> {
    /// `None` once the trailers are sent.
    events: Option<EventStream<E>>,
}

impl<E: Message + 'static> http_body::Body for Framed<E> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(events) = this.events.as_mut() else {
            return Poll::Ready(None);
        };
        let end = match events.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(event))) => {
                return Poll::Ready(Some(Ok(Frame::data(frame(&event)))));
            }
            Poll::Ready(Some(Err(status))) => Some(status),
            Poll::Ready(None) => None,
        };
        // The stream ends: drop it (and with it the hub subscription), then send the status.
        this.events = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daprs_api::grpc_frame::PREFIX_BYTES;
    use daprs_api::proto::operator::{ComponentUpdateEvent, ComponentUpdateRequest};

    fn prefixed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn a_request_is_one_prefixed_message() {
        let request = ComponentUpdateRequest {
            namespace: "apps".into(),
        };
        let bytes = prefixed(0, &request.encode_to_vec());
        assert_eq!(
            decode_request::<ComponentUpdateRequest>(Bytes::from(bytes)).unwrap(),
            request
        );
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let message = ComponentUpdateRequest::default().encode_to_vec();
        let cases: [(Vec<u8>, tonic::Code, &str); 4] = [
            (Vec::new(), tonic::Code::InvalidArgument, "no message"),
            (
                prefixed(1, &message),
                tonic::Code::Unimplemented,
                "compressed",
            ),
            (
                {
                    let mut b = prefixed(0, b"abc");
                    b.pop();
                    b
                },
                tonic::Code::InvalidArgument,
                "says 3 bytes but 2 follow",
            ),
            (
                prefixed(0, &[0xff, 0xff]),
                tonic::Code::InvalidArgument,
                "malformed",
            ),
        ];
        for (bytes, code, words) in cases {
            let status = decode_request::<ComponentUpdateRequest>(Bytes::from(bytes)).unwrap_err();
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(words), "{status:?}");
        }
    }

    #[test]
    fn an_event_frame_is_the_prefix_and_exactly_the_message() {
        let event = ComponentUpdateEvent {
            component: br#"{"metadata":{"name":"store"}}"#.to_vec(),
            r#type: 2,
        };
        let framed = frame(&event);
        let message = event.encode_to_vec();
        assert_eq!(framed.as_ref(), prefixed(0, &message).as_slice());
        assert_eq!(framed.len(), PREFIX_BYTES + message.len());
    }

    #[test]
    fn a_stream_ends_with_its_status_in_the_trailers() {
        let ok = trailers(None);
        assert_eq!(ok.get("grpc-status").unwrap(), "0");
        let aborted = trailers(Some(Status::aborted("the stream fell behind")));
        assert_eq!(aborted.get("grpc-status").unwrap(), "10");
        assert_eq!(
            aborted.get("grpc-message").unwrap(),
            "the%20stream%20fell%20behind"
        );
    }

    #[tokio::test]
    async fn the_body_sends_each_event_then_the_trailers_and_ends() {
        let events: EventStream<ComponentUpdateEvent> = Box::pin(futures::stream::iter([
            Ok(ComponentUpdateEvent {
                component: b"a".to_vec(),
                r#type: 1,
            }),
            Ok(ComponentUpdateEvent {
                component: b"bb".to_vec(),
                r#type: 2,
            }),
            Err(Status::unavailable("the operator is shutting down")),
        ]));
        let mut body = Framed {
            events: Some(events),
        };
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        assert_eq!(data.len(), 2);
        let second = ComponentUpdateEvent::decode(&data[1][PREFIX_BYTES..]).unwrap();
        assert_eq!(second.component, b"bb");
        assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "14");
        assert!(http_body::Body::is_end_stream(&body));
    }
}
