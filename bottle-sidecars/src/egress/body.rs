//! Body adapters: a request body whose scanned prefix was already read, and a
//! response body that re-masks held secrets while streaming and writes the
//! audit line when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::HeaderMap;

use super::net::BoxError;
use crate::dlp::Detector;

/// The body type the proxy sends and returns.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body from a static buffer.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    use http_body_util::BodyExt as _;
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Read up to `limit` bytes of `body` (whole frames, so possibly a little
/// more). Returns the bytes read, trailers if the body ended with them, and
/// whether the body ended.
pub async fn read_prefix(
    body: &mut Incoming,
    limit: usize,
) -> Result<(Bytes, Option<HeaderMap>, bool), hyper::Error> {
    use http_body_util::BodyExt as _;
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        match body.frame().await {
            None => return Ok((buf.freeze(), None, true)),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(frame) => {
                    return Ok((buf.freeze(), frame.into_trailers().ok(), true));
                }
            },
        }
    }
    Ok((buf.freeze(), None, false))
}

/// A request body: an already-read prefix, then trailers or the rest.
pub struct PrefixedBody {
    prefix: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Incoming>,
}

impl PrefixedBody {
    /// `rest` is `None` when the prefix was the whole body.
    pub fn new(prefix: Bytes, trailers: Option<HeaderMap>, rest: Option<Incoming>) -> Self {
        Self {
            prefix: if prefix.is_empty() {
                None
            } else {
                Some(prefix)
            },
            trailers,
            rest,
        }
    }
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(p) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        match self.rest.as_mut() {
            None => Poll::Ready(None),
            Some(rest) => match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(None) => {
                    self.rest = None;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(extra),
            Some(r) => {
                let h = r.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + extra);
                if let Some(u) = h.upper() {
                    out.set_upper(u + extra);
                }
                out
            }
        }
    }
}

/// Called once when a response body finishes (or is dropped) with the number
/// of bytes delivered to the agent.
pub type OnDone = Box<dyn FnOnce(u64) + Send + Sync>;

/// A response body that masks held values (length-preserving) while
/// streaming. It keeps back only a tail that could be the start of a held
/// value, so streamed responses (SSE) are not delayed otherwise.
pub struct MaskBody {
    inner: ProxyBody,
    detector: Option<Arc<Detector>>,
    carry: BytesMut,
    pending_trailers: Option<HeaderMap>,
    ended: bool,
    bytes: u64,
    on_done: Option<OnDone>,
}

impl MaskBody {
    /// Wrap `inner`; `detector` is `None` when nothing is held or masking is off.
    pub fn new(inner: ProxyBody, detector: Option<Arc<Detector>>, on_done: OnDone) -> Self {
        Self {
            inner,
            detector,
            carry: BytesMut::new(),
            pending_trailers: None,
            ended: false,
            bytes: 0,
            on_done: Some(on_done),
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_done.take() {
            f(self.bytes);
        }
    }

    /// Mask `carry`, split off what can be emitted now.
    fn emit(&mut self, flush: bool) -> Option<Bytes> {
        if self.carry.is_empty() {
            return None;
        }
        let det = self.detector.as_ref()?;
        if let Some(masked) = det.mask(&self.carry) {
            self.carry.clear();
            self.carry.extend_from_slice(&masked);
        }
        let keep = if flush {
            0
        } else {
            det.pending_tail_len(&self.carry)
        };
        let n = self.carry.len() - keep;
        if n == 0 {
            return None;
        }
        let out = self.carry.split_to(n).freeze();
        self.bytes += out.len() as u64;
        Some(out)
    }
}

impl Drop for MaskBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for MaskBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended {
                if let Some(data) = this.emit(true) {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                if let Some(t) = this.pending_trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                this.finish();
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(Err(e))) => {
                    this.finish();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if this.detector.is_none() {
                            this.bytes += data.len() as u64;
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        this.carry.extend_from_slice(&data);
                        if let Some(out) = this.emit(false) {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        this.pending_trailers = frame.into_trailers().ok();
                        this.ended = true;
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.carry.is_empty() && self.pending_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Masking preserves length.
        let h = self.inner.size_hint();
        let mut out = SizeHint::new();
        out.set_lower(h.lower() + self.carry.len() as u64);
        if let Some(u) = h.upper() {
            out.set_upper(u + self.carry.len() as u64);
        }
        out
    }
}
