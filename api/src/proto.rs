//! Generated gRPC code for the protocols daprs owns (see `api/proto/`).

/// `dapr.proto.sentry.v1`: the certificate authority.
pub mod sentry {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.sentry.v1");
}

/// `dapr.proto.operator.v1`: the operator API sidecars load and watch their resources with
/// (Dapr's `Operator` service), plus daprs' `ResourceStatus` reports.
pub mod operator {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.operator.v1");
}

/// `dapr.proto.common.v1`: the invocation messages sidecars exchange (a subset of Dapr's).
pub mod common {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.common.v1");
}

/// `dapr.proto.internals.v1`: sidecar-to-sidecar service invocation (`ServiceInvocation`).
pub mod internals {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dapr.proto.internals.v1");
}

/// Encode and decode buffers of [`SMALL_BUFFER`] bytes instead of tonic's 8 KiB.
pub const SMALL_BUFFER: usize = 512;

/// The protobuf codec of the operator API, with small initial buffers.
///
/// tonic keeps one encode buffer for the life of every response stream, 8 KiB by default. The
/// operator holds a `ComponentUpdate` stream (and more) for every sidecar, so with 1,000
/// sidecars that is 8 MB of buffers for messages that are a few hundred bytes to a few KB.
/// The buffers still grow to fit any message (up to the usual message size limits); only
/// their starting size differs. Wire format and behaviour are prost's, unchanged.
#[derive(Debug)]
pub struct SmallBufferCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(small_buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(small_buffers())
    }
}

fn small_buffers() -> tonic::codec::BufferSettings {
    // 32 KiB: tonic's default yield threshold (encoded messages are sent in batches up to it).
    tonic::codec::BufferSettings::new(SMALL_BUFFER, 32 * 1024)
}
