//! Trace context on the way to the app: W3C `traceparent` (HTTP) and the binary
//! `grpc-trace-bin` (gRPC, OpenCensus format) carry the same span context; gRPC apps get both,
//! HTTP apps get `traceparent` (made from `grpc-trace-bin` when a gRPC caller sent only that).
//!
//! `grpc-trace-bin` is 29 bytes: version 0, then field 0 (trace id, 16 bytes), field 1 (span
//! id, 8 bytes) and field 2 (trace flags, 1 byte), each after its field id byte.

/// One span context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const GRPC_TRACE_BIN: &str = "grpc-trace-bin";

fn hex_to<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SpanContext {
    fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }

    /// Parses a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`); `None` when invalid or
    /// all-zero. Versions above 00 are read by their first four fields, as the spec asks.
    pub fn from_traceparent(value: &str) -> Option<SpanContext> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace_id = hex_to::<16>(parts.next()?)?;
        let span_id = hex_to::<8>(parts.next()?)?;
        let [flags] = hex_to::<1>(parts.next()?)?;
        let [v] = hex_to::<1>(version)?;
        if v == 0xff || (v == 0 && parts.next().is_some()) {
            return None;
        }
        let sc = SpanContext {
            trace_id,
            span_id,
            flags,
        };
        sc.is_valid().then_some(sc)
    }

    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }

    /// Parses `grpc-trace-bin`; `None` without version 0 and a trace id.
    pub fn from_binary(b: &[u8]) -> Option<SpanContext> {
        let b = b.strip_prefix(&[0])?;
        let b = b.strip_prefix(&[0])?;
        let trace_id: [u8; 16] = b.get(..16)?.try_into().ok()?;
        let mut rest = &b[16..];
        let mut span_id = [0u8; 8];
        if let Some(r) = rest.strip_prefix(&[1])
            && r.len() >= 8
        {
            span_id.copy_from_slice(&r[..8]);
            rest = &r[8..];
        }
        let flags = match rest {
            [2, f, ..] => *f,
            _ => 0,
        };
        let sc = SpanContext {
            trace_id,
            span_id,
            flags,
        };
        sc.is_valid().then_some(sc)
    }

    pub fn to_binary(&self) -> [u8; 29] {
        let mut b = [0u8; 29];
        b[2..18].copy_from_slice(&self.trace_id);
        b[18] = 1;
        b[19..27].copy_from_slice(&self.span_id);
        b[27] = 2;
        b[28] = self.flags;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_round_trip_and_binary() {
        let sc = SpanContext::from_traceparent(TP).unwrap();
        assert_eq!(sc.to_traceparent(), TP);
        let bin = sc.to_binary();
        assert_eq!(bin[0..2], [0, 0]);
        assert_eq!(bin[2..18], sc.trace_id);
        assert_eq!((bin[18], bin[27], bin[28]), (1, 2, 1));
        assert_eq!(SpanContext::from_binary(&bin), Some(sc));
    }

    #[test]
    fn invalid_contexts_are_refused() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319Z-b7ad6b7169203331-01",
        ] {
            assert_eq!(SpanContext::from_traceparent(bad), None, "{bad}");
        }
        assert_eq!(SpanContext::from_binary(&[1, 0]), None);
        assert_eq!(SpanContext::from_binary(&[0, 0, 1, 2]), None);
        // A future version's extra fields are ignored.
        assert!(
            SpanContext::from_traceparent(
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz"
            )
            .is_some()
        );
    }
}
