//! Body adapters: a request body whose scanned prefix was already read, and a
//! response body that re-masks held secrets while streaming and writes the
//! audit line when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::HeaderMap;
use tokio::sync::OwnedSemaphorePermit;

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

/// Why a body prefix could not be read.
#[derive(Debug)]
pub enum PrefixError {
    /// The connection failed.
    Body(hyper::Error),
    /// The proxy-wide budget of buffered body bytes is used up.
    Busy,
}

/// Read up to `limit` bytes of `body` (whole frames, so possibly a little
/// more), taking every buffered byte from `budget` (one permit per byte;
/// the returned permit holds them). Returns the bytes read, trailers if the
/// body ended with them, and whether the body ended.
pub async fn read_prefix(
    body: &mut Incoming,
    limit: usize,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<(Bytes, Option<HeaderMap>, bool, Option<OwnedSemaphorePermit>), PrefixError> {
    use http_body_util::BodyExt as _;
    let mut buf = BytesMut::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while buf.len() < limit {
        match body.frame().await {
            None => return Ok((buf.freeze(), None, true, held)),
            Some(Err(e)) => return Err(PrefixError::Body(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    take_budget(budget, &mut held, data.len())?;
                    buf.extend_from_slice(&data);
                }
                Err(frame) => {
                    return Ok((buf.freeze(), frame.into_trailers().ok(), true, held));
                }
            },
        }
    }
    Ok((buf.freeze(), None, false, held))
}

/// Take `n` more bytes from `budget` into `held`, or fail without waiting.
pub fn take_budget(
    budget: &Arc<tokio::sync::Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
    n: usize,
) -> Result<(), PrefixError> {
    if n == 0 {
        return Ok(());
    }
    let n = u32::try_from(n).map_err(|_| PrefixError::Busy)?;
    let permit = budget
        .clone()
        .try_acquire_many_owned(n)
        .map_err(|_| PrefixError::Busy)?;
    match held {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

/// Called once when a streamed request body is refused, with the audit
/// rule (`dlp:held:<name>`, `dlp:pattern:<id>` or `buffer-limit`).
pub type OnRefused = Box<dyn FnOnce(&str) + Send + Sync>;

/// Scan a request body's bytes past its prefix as they stream.
pub struct StreamScan {
    /// The detector.
    pub detector: Arc<Detector>,
    /// The proxy-wide budget of buffered body bytes.
    pub budget: Arc<tokio::sync::Semaphore>,
    /// Writes the refusal's audit line and tells the handler.
    pub on_refused: OnRefused,
}

/// Scanned bytes are batched up to this much before a scan when more is
/// already there to read (fewer, larger scans).
const STREAM_BATCH: usize = 64 << 10;

/// A request body: an already-read (and scanned) prefix, its trailers if
/// the body ended within the prefix (scanned too), then the rest, scanned
/// as it streams (ARCHITECTURE.md "egress"): the last
/// [`Detector::stream_window`] bytes of what was scanned are held back and
/// scanned again with the next bytes, so nothing is forwarded before it
/// has been scanned together with what follows it closely enough to
/// complete a held value. A hit ends the body with an error (the upstream
/// request is aborted; what it got holds no part of the match) and calls
/// [`StreamScan::on_refused`]. Trailers that arrive after the prefix are
/// dropped, never forwarded.
pub struct PrefixedBody {
    /// Scanned bytes that may go out now.
    ready: Option<Bytes>,
    /// Scanned bytes held back (the window) plus read bytes not scanned yet.
    buf: BytesMut,
    trailers: Option<HeaderMap>,
    rest: Option<Incoming>,
    scan: Option<StreamScan>,
    window: usize,
    /// Budget bytes held for what is buffered.
    permit: Option<OwnedSemaphorePermit>,
    /// Refused: every further poll ends the body.
    refused: bool,
}

impl PrefixedBody {
    /// `rest` is `None` when the prefix was the whole body; `scan` is how
    /// the rest is scanned (`None`: it was all scanned, or DLP is off).
    pub fn new(
        prefix: Bytes,
        trailers: Option<HeaderMap>,
        rest: Option<Incoming>,
        permit: Option<OwnedSemaphorePermit>,
        scan: Option<StreamScan>,
    ) -> Self {
        let window = scan.as_ref().map_or(0, |s| s.detector.stream_window());
        let mut ready = prefix;
        let mut buf = BytesMut::new();
        if rest.is_some() && scan.is_some() {
            let keep = window.min(ready.len());
            buf.extend_from_slice(&ready.split_off(ready.len() - keep));
        }
        Self {
            ready: (!ready.is_empty()).then_some(ready),
            buf,
            trailers,
            rest,
            scan,
            window,
            permit,
            refused: false,
        }
    }

    /// Keep budget for what stays buffered; take more when the buffer grows.
    fn fit_budget(&mut self, want: usize) -> Result<(), PrefixError> {
        let have = self.permit.as_ref().map_or(0, |p| p.num_permits());
        if have > want {
            if let Some(p) = self.permit.as_mut() {
                drop(p.split(have - want));
            }
            return Ok(());
        }
        match &self.scan {
            Some(s) => take_budget(&s.budget, &mut self.permit, want - have),
            None => Ok(()),
        }
    }

    /// Scan `buf` whole; on a clean scan, split off what may go out
    /// (everything when `last`, else all but the window).
    fn scan_buf(&mut self, last: bool) -> Result<Option<Bytes>, BoxError> {
        let hit = match &self.scan {
            Some(s) if !self.buf.is_empty() => s.detector.scan(&self.buf),
            _ => None,
        };
        if let Some(found) = hit {
            return Err(self.refuse(&format!("dlp:{}", found.rule)));
        }
        let keep = if last {
            0
        } else {
            self.window.min(self.buf.len())
        };
        let n = self.buf.len() - keep;
        let out = (n > 0).then(|| self.buf.split_to(n).freeze());
        // Shrinking never fails.
        let _ = self.fit_budget(self.buf.len());
        Ok(out)
    }

    fn refuse(&mut self, rule: &str) -> BoxError {
        self.refused = true;
        self.rest = None;
        self.buf = BytesMut::new();
        self.permit = None;
        if let Some(s) = self.scan.take() {
            (s.on_refused)(rule);
        }
        format!("request body refused by egress ({rule})").into()
    }
}

impl Body for PrefixedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.refused {
            return Poll::Ready(None);
        }
        if let Some(p) = this.ready.take() {
            // Budget only for what stays buffered.
            let _ = this.fit_budget(this.buf.len());
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if this.scan.is_none() {
            this.permit = None;
        }
        loop {
            let Some(rest) = this.rest.as_mut() else {
                if !this.buf.is_empty() {
                    let out = this.buf.split().freeze();
                    this.permit = None;
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                this.permit = None;
                if let Some(t) = this.trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                return Poll::Ready(None);
            };
            let scanning = this.scan.is_some();
            match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    this.rest = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(data) if !scanning => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => {
                        let want = this.buf.len() + data.len();
                        if this.fit_budget(want).is_err() {
                            return Poll::Ready(Some(Err(this.refuse("buffer-limit"))));
                        }
                        this.buf.extend_from_slice(&data);
                        if this.buf.len() >= this.window + STREAM_BATCH {
                            match this.scan_buf(false) {
                                Err(e) => return Poll::Ready(Some(Err(e))),
                                Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                                Ok(None) => {}
                            }
                        }
                    }
                    Err(_trailers) => {
                        // Unscanned trailers: dropped (see the type's docs).
                        this.rest = None;
                        match this.scan_buf(true) {
                            Err(e) => return Poll::Ready(Some(Err(e))),
                            Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                            Ok(None) => {}
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.rest = None;
                    match this.scan_buf(true) {
                        Err(e) => return Poll::Ready(Some(Err(e))),
                        Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Ok(None) => {}
                    }
                }
                Poll::Pending => {
                    // Nothing more to read now: scan what came and send what
                    // is clear of the window — once at least a window's
                    // worth of new bytes is there (a scan costs the window
                    // again; tiny frames must not each pay it).
                    if scanning && this.buf.len() >= 2 * this.window {
                        match this.scan_buf(false) {
                            Err(e) => return Poll::Ready(Some(Err(e))),
                            Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                            Ok(None) => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refused
            || (self.ready.is_none()
                && self.buf.is_empty()
                && self.trailers.is_none()
                && self.rest.as_ref().is_none_or(|r| r.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self.ready.as_ref().map_or(0, |p| p.len() as u64) + self.buf.len() as u64;
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
                        // The last frame of a sized body: nothing can
                        // complete a held value, so the whole carry goes out
                        // now, in one frame.
                        let last = this.inner.is_end_stream();
                        if last {
                            this.ended = true;
                        }
                        if let Some(out) = this.emit(last) {
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

/// A `Content-Encoding` the proxy can decode before scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` / `x-gzip` (any number of members).
    Gzip,
    /// `deflate`: zlib-wrapped, or raw deflate as some clients send it.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// At most this many stacked codings are decoded; more is refused.
pub const MAX_CODINGS: usize = 4;

/// The request's `Content-Encoding` codings in the order they were applied
/// (`identity` dropped). `Err(name)` names the first coding the proxy cannot
/// decode (unknown, or more than [`MAX_CODINGS`]).
pub fn content_codings(headers: &HeaderMap) -> Result<Vec<Coding>, String> {
    let mut out = Vec::new();
    for value in headers.get_all(hyper::header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err("(not text)".into());
        };
        for token in text.split(',') {
            let token = token.trim().to_ascii_lowercase();
            let coding = match token.as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(token),
            };
            out.push(coding);
        }
    }
    if out.len() > MAX_CODINGS {
        return Err(format!("{} stacked codings", out.len()));
    }
    Ok(out)
}

/// Why an encoded body could not be decoded for scanning.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// It decodes to more than the limit (a decompression bomb, or just too
    /// big to scan).
    TooLarge,
    /// The bytes are not valid for the named coding.
    Corrupt(Coding),
}

/// zstd frames may ask for a window of up to 2^this bytes (8 MiB); larger
/// windows are refused rather than allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Undo `codings` (applied in that order) on `data`, never producing or
/// buffering more than `limit` bytes of output per step.
pub fn decode_bounded(
    data: &[u8],
    codings: &[Coding],
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut cur = data.to_vec();
    for &coding in codings.iter().rev() {
        cur = decode_one(&cur, coding, limit)?;
    }
    Ok(cur)
}

fn decode_one(data: &[u8], coding: Coding, limit: usize) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    fn drain(r: impl Read, limit: usize, coding: Coding) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        match r.take(limit as u64 + 1).read_to_end(&mut out) {
            Ok(_) if out.len() > limit => Err(DecodeError::TooLarge),
            Ok(_) => Ok(out),
            Err(_) => Err(DecodeError::Corrupt(coding)),
        }
    }
    match coding {
        Coding::Gzip => drain(flate2::read::MultiGzDecoder::new(data), limit, coding),
        Coding::Deflate => match drain(flate2::read::ZlibDecoder::new(data), limit, coding) {
            Err(DecodeError::Corrupt(_)) => {
                drain(flate2::read::DeflateDecoder::new(data), limit, coding)
            }
            other => other,
        },
        Coding::Brotli => drain(
            brotli_decompressor::Decompressor::new(data, 4096),
            limit,
            coding,
        ),
        Coding::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::new(data).map_err(|_| DecodeError::Corrupt(coding))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|_| DecodeError::Corrupt(coding))?;
            drain(d, limit, coding)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codings_parse_in_order_and_unknown_ones_are_named() {
        let mut h = HeaderMap::new();
        h.append("content-encoding", "gzip, identity".parse().unwrap());
        h.append("content-encoding", "BR".parse().unwrap());
        assert_eq!(
            content_codings(&h).unwrap(),
            vec![Coding::Gzip, Coding::Brotli]
        );
        h.append("content-encoding", "compress".parse().unwrap());
        assert_eq!(content_codings(&h).unwrap_err(), "compress");
        let mut h = HeaderMap::new();
        h.insert(
            "content-encoding",
            "gzip,gzip,gzip,gzip,gzip".parse().unwrap(),
        );
        assert!(content_codings(&h).is_err());
    }

    #[test]
    fn stacked_codings_decode_and_bombs_stop_at_the_limit() {
        let plain = b"hello secret world".to_vec();
        let twice = gzip(&gzip(&plain));
        assert_eq!(
            decode_bounded(&twice, &[Coding::Gzip, Coding::Gzip], 1024).unwrap(),
            plain
        );
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            decode_bounded(&bomb, &[Coding::Gzip], 1 << 20).unwrap_err(),
            DecodeError::TooLarge
        );
        assert_eq!(
            decode_bounded(b"not gzip", &[Coding::Gzip], 1024).unwrap_err(),
            DecodeError::Corrupt(Coding::Gzip)
        );
        // Raw deflate labelled `deflate` is decoded too.
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&plain).unwrap();
        assert_eq!(
            decode_bounded(&e.finish().unwrap(), &[Coding::Deflate], 1024).unwrap(),
            plain
        );
    }
}
