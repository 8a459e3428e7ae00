//! SPDY/3 framing, as far as Kubernetes' streams use it (kubectl up to 1.29 upgrades to
//! `SPDY/3.1` for exec, attach and port-forward; the framing is SPDY/3's, without flow control:
//! moby/spdystream, client-go's SPDY, has none).
//!
//! A control frame: `1 | version (15) | type (16) | flags (8) | length (24) | data`; a data frame:
//! `0 | stream (31) | flags (8) | length (24) | data`. Header blocks (SYN_STREAM, SYN_REPLY,
//! HEADERS) are `count (32)` then `name length (32) | name | value length (32) | value` pairs,
//! compressed with one zlib stream per direction whose preset dictionary is SPDY/3's
//! ([`dictionary`]), each block ended by a sync flush.
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;
pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame accepted (headers or data); SPDY allows 16 MiB, nobody here sends that.
pub const MAX_FRAME: usize = 1 << 20;
/// The most a header block may inflate to.
const MAX_HEADERS: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("a frame of {0} bytes is more than this server takes")]
    TooLarge(usize),
    #[error("a SPDY/{0} control frame (only SPDY/3 is spoken)")]
    Version(u16),
    #[error("a malformed {0} frame")]
    Malformed(&'static str),
    #[error("a header block that does not inflate")]
    Inflate(#[source] flate2::DecompressError),
    #[error("a header block that does not deflate")]
    Deflate(#[source] flate2::CompressError),
}

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames: nothing to do here.
    Ignored(u16),
}

/// SPDY/3's header compression dictionary: its words, each with a 32-bit length before it, then
/// status lines, dates and media types as they are.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct",
            " Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=",
            "iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1424);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// The frames of one connection: header blocks inflated with the peer's zlib stream and
/// deflated with ours.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Codec {
    fn default() -> Codec {
        let mut deflate = Compress::new(Compression::default(), true);
        // (a fresh stream: setting the dictionary cannot fail)
        let _ = deflate.set_dictionary(dictionary());
        Codec {
            inflate: Decompress::new(true),
            deflate,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn stream_at(b: &[u8], at: usize) -> u32 {
    u32_at(b, at) & 0x7fff_ffff
}

impl Codec {
    /// The next whole frame of `buf` (taken off it), or None while it has only part of one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32_at(buf, 4) & 0x00ff_ffff) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let body = buf.split_to(len).freeze();
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream: stream_at(&head, 0),
                fin,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize, what| match body.len() >= n {
            true => Ok(()),
            false => Err(SpdyError::Malformed(what)),
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    stream: stream_at(&body, 0),
                    fin,
                    headers: self.inflate_headers(&body[10..])?,
                }
            }
            SYN_REPLY => {
                need(4, "SYN_REPLY")?;
                Frame::SynReply {
                    stream: stream_at(&body, 0),
                    fin,
                    headers: self.inflate_headers(&body[4..])?,
                }
            }
            HEADERS => {
                need(4, "HEADERS")?;
                Frame::Headers {
                    stream: stream_at(&body, 0),
                    fin,
                    headers: self.inflate_headers(&body[4..])?,
                }
            }
            RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream: stream_at(&body, 0),
                    status: u32_at(&body, 4),
                }
            }
            PING => {
                need(4, "PING")?;
                Frame::Ping(u32_at(&body, 0))
            }
            GOAWAY => {
                need(4, "GOAWAY")?;
                Frame::GoAway {
                    last: stream_at(&body, 0),
                    status: if body.len() >= 8 { u32_at(&body, 4) } else { 0 },
                }
            }
            other => Frame::Ignored(other),
        };
        Ok(Some(frame))
    }

    fn inflate_headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADERS {
                    return Err(SpdyError::TooLarge(out.len()));
                }
                out.reserve(out.len());
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before_in) as usize..];
            let progress =
                self.inflate.total_in() != before_in || self.inflate.total_out() != before_out;
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(SpdyError::Inflate)?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Inflate(e)),
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
            }
            // all of the block in, and room left: the flush is complete
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if !progress && out.len() < out.capacity() {
                return Err(SpdyError::Malformed("header block"));
            }
        }
        parse_headers(&out)
    }

    /// `frame`'s bytes on the wire.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let control = |kind: u16, flags: u8, body: &[u8]| {
            let mut v = Vec::with_capacity(8 + body.len());
            v.put_u16(0x8000 | VERSION);
            v.put_u16(kind);
            v.put_u32(((flags as u32) << 24) | body.len() as u32);
            v.extend_from_slice(body);
            v
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        Ok(match frame {
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                let mut body = Vec::new();
                body.put_u32(*stream);
                body.put_u32(0);
                body.put_u16(0);
                body.extend_from_slice(&self.deflate_headers(headers)?);
                control(SYN_STREAM, fin_flag(*fin), &body)
            }
            Frame::SynReply {
                stream,
                fin,
                headers,
            } => {
                let mut body = Vec::new();
                body.put_u32(*stream);
                body.extend_from_slice(&self.deflate_headers(headers)?);
                control(SYN_REPLY, fin_flag(*fin), &body)
            }
            Frame::Headers {
                stream,
                fin,
                headers,
            } => {
                let mut body = Vec::new();
                body.put_u32(*stream);
                body.extend_from_slice(&self.deflate_headers(headers)?);
                control(HEADERS, fin_flag(*fin), &body)
            }
            Frame::RstStream { stream, status } => {
                let mut body = Vec::new();
                body.put_u32(*stream);
                body.put_u32(*status);
                control(RST_STREAM, 0, &body)
            }
            Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last, status } => {
                let mut body = Vec::new();
                body.put_u32(*last);
                body.put_u32(*status);
                control(GOAWAY, 0, &body)
            }
            Frame::Data { stream, fin, data } => {
                let mut v = Vec::with_capacity(8 + data.len());
                v.put_u32(*stream & 0x7fff_ffff);
                v.put_u32(((fin_flag(*fin) as u32) << 24) | data.len() as u32);
                v.extend_from_slice(data);
                v
            }
            Frame::Ignored(kind) => control(*kind, 0, &[]),
        })
    }

    fn deflate_headers(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (k, v) in headers {
            plain.put_u32(k.len() as u32);
            plain.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            plain.put_u32(v.len() as u32);
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(SpdyError::Deflate)?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // done when all went in and the flush had room to finish
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// An inflated header block's pairs (several values of one name: NUL-separated, kept so).
fn parse_headers(b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut b = b;
    let bad = SpdyError::Malformed("header block");
    if b.len() < 4 {
        return Err(bad);
    }
    let n = b.get_u32() as usize;
    let mut out = Vec::with_capacity(n.min(64));
    let take = |b: &mut &[u8]| -> Option<String> {
        if b.len() < 4 {
            return None;
        }
        let len = b.get_u32() as usize;
        if b.len() < len {
            return None;
        }
        let s = String::from_utf8_lossy(&b[..len]).into_owned();
        b.advance(len);
        Some(s)
    };
    for _ in 0..n {
        let name = take(&mut b).ok_or(SpdyError::Malformed("header name"))?;
        let value = take(&mut b).ok_or(SpdyError::Malformed("header value"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The value of header `name` (lowercase) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How long a client may take to open the streams of a session.
const STREAMS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Frames queued for the writer, and client data queued for the session.
const QUEUED: usize = 8;

/// What the client does on a connection.
#[derive(Debug)]
pub enum Event {
    /// A new stream (already answered with a SYN_REPLY) and its headers.
    Stream {
        stream: u32,
        headers: Vec<(String, String)>,
    },
    /// Data on a stream; `fin`: the client's last.
    Data { stream: u32, data: Bytes, fin: bool },
    /// The client reset a stream.
    Reset { stream: u32 },
}

/// A server's SPDY connection: frames to send, the client's events, and the two tasks.
pub struct Conn {
    pub frames: tokio::sync::mpsc::Sender<Frame>,
    pub events: tokio::sync::mpsc::Receiver<Event>,
    pub writer: tokio::task::JoinHandle<()>,
    pub reader: tokio::task::JoinHandle<()>,
}

/// Runs SPDY on `io`: a writer encoding `frames`, a reader answering new streams with a
/// SYN_REPLY and PINGs with themselves, and passing the rest on as events; the events end with
/// the connection (the client's GOAWAY, its end, or a bad frame).
pub fn serve<IO>(io: IO) -> Conn
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut rd, mut wr) = tokio::io::split(io);
    let (frames, mut queued) = tokio::sync::mpsc::channel::<Frame>(QUEUED);
    let (events_tx, events) = tokio::sync::mpsc::channel::<Event>(QUEUED);
    let writer = tokio::spawn(async move {
        let mut codec = Codec::default();
        while let Some(f) = queued.recv().await {
            let Ok(bytes) = codec.encode(&f) else { return };
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
            let last = matches!(f, Frame::GoAway { .. });
            if last {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let replies = frames.clone();
    let reader = tokio::spawn(async move {
        let mut codec = Codec::default();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                Err(e) => {
                    tracing::debug!(error = %crate::runtime::chain(&e), "SPDY: a bad frame");
                    return;
                }
            };
            let event = match frame {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    let reply = Frame::SynReply {
                        stream,
                        fin: false,
                        headers: vec![],
                    };
                    if replies.send(reply).await.is_err() {
                        return;
                    }
                    Event::Stream { stream, headers }
                }
                Frame::Data { stream, fin, data } => Event::Data { stream, data, fin },
                Frame::Headers {
                    stream, fin: true, ..
                } => Event::Data {
                    stream,
                    data: Bytes::new(),
                    fin: true,
                },
                Frame::RstStream { stream, .. } => Event::Reset { stream },
                Frame::Ping(id) => {
                    if replies.send(Frame::Ping(id)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Frame::GoAway { .. } => return,
                _ => continue,
            };
            if events_tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Conn {
        frames,
        events,
        writer,
        reader,
    }
}

/// A session's streams, once the client opened all it should.
pub struct Accepted {
    /// (channel, stream) of each stream wanted.
    pub streams: Vec<(u8, u32)>,
    pub frames: tokio::sync::mpsc::Sender<Frame>,
    /// The client's data: (stream, data, fin).
    pub data: tokio::sync::mpsc::Receiver<(u32, Bytes, bool)>,
    pub writer: tokio::task::JoinHandle<()>,
    pub reader: tokio::task::JoinHandle<()>,
}

/// Waits (at most 30 s, as the kubelet) for the client to open a stream of each
/// `streamType` of `wanted` (with the channel each stands for), then passes the client's data
/// on. None when it does not.
pub async fn accept<IO>(io: IO, wanted: &[(&str, u8)]) -> Option<Accepted>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let Conn {
        frames,
        mut events,
        writer,
        reader,
    } = serve(io);
    let mut streams = Vec::new();
    // data on a stream already open, sent before the client opened the last (kept for the
    // session, as spdystream's streams buffer theirs)
    let mut early = Vec::new();
    let opened = tokio::time::timeout(STREAMS_TIMEOUT, async {
        while streams.len() < wanted.len() {
            match events.recv().await? {
                Event::Stream { stream, headers } => {
                    let kind = header(&headers, "streamtype").unwrap_or("");
                    if let Some((_, ch)) = wanted.iter().find(|(k, _)| *k == kind) {
                        streams.push((*ch, stream));
                    }
                }
                Event::Data { stream, data, fin } => {
                    if early.len() >= QUEUED {
                        tracing::debug!("SPDY: too much data before the streams were open");
                        return None;
                    }
                    early.push((stream, data, fin));
                }
                Event::Reset { .. } => continue,
            }
        }
        Some(())
    })
    .await;
    if !matches!(opened, Ok(Some(()))) {
        tracing::debug!(
            opened = streams.len(),
            wanted = wanted.len(),
            "SPDY: the client did not open its streams"
        );
        let _ = frames.send(Frame::GoAway { last: 0, status: 0 }).await;
        reader.abort();
        return None;
    }
    let (data_tx, data) = tokio::sync::mpsc::channel(QUEUED);
    let pass = tokio::spawn(async move {
        for d in early {
            if data_tx.send(d).await.is_err() {
                return;
            }
        }
        while let Some(e) = events.recv().await {
            if let Event::Data { stream, data, fin } = e {
                if data_tx.send((stream, data, fin)).await.is_err() {
                    return;
                }
            }
        }
    });
    let reader = tokio::spawn(async move {
        let _ = reader.await;
        let _ = pass.await;
    });
    Some(Accepted {
        streams,
        frames,
        data,
        writer,
        reader,
    })
}

/// Ends a session: our last data on each of `streams`, then GOAWAY (the writer closes the
/// connection after it).
pub async fn finish(frames: &tokio::sync::mpsc::Sender<Frame>, streams: &[(u8, u32)]) {
    for (_, stream) in streams {
        let _ = frames
            .send(Frame::Data {
                stream: *stream,
                fin: true,
                data: Bytes::new(),
            })
            .await;
    }
    let last = streams.iter().map(|(_, s)| *s).max().unwrap_or(0);
    let _ = frames.send(Frame::GoAway { last, status: 0 }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",enq=0."));
        // zlib names a preset dictionary by its Adler-32, which kubectl's header blocks carry:
        // SPDY/3's is e3c6a7c2
        let (mut a, mut b) = (1u32, 0u32);
        for x in d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_survive_a_round_trip_with_one_zlib_stream_per_direction() {
        let frames = [
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: pairs(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream: 3,
                fin: true,
                headers: pairs(&[("streamtype", "stdout"), ("port", "8080")]),
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Headers {
                stream: 3,
                fin: false,
                headers: pairs(&[("x", "y")]),
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream: 5,
                fin: false,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream: 7,
                status: 5,
            },
            Frame::Ping(1),
            Frame::GoAway { last: 7, status: 0 },
        ];
        let (mut client, mut server) = (Codec::default(), Codec::default());
        let mut wire = BytesMut::new();
        for f in &frames {
            wire.extend_from_slice(&client.encode(f).unwrap());
        }
        // a partial frame waits for the rest
        let mut part = BytesMut::from(&wire[..5]);
        assert_eq!(server.decode(&mut part).unwrap(), None);
        for f in &frames {
            assert_eq!(server.decode(&mut wire).unwrap().as_ref(), Some(f));
        }
        assert!(wire.is_empty());
    }

    /// Frames of kubectl 1.27's `exec -i POD -- sh -c 'wc -l; cat'` as the agent received
    /// them (captured in tests/node_api.rs): the error, stdin, stdout and stderr streams,
    /// stdin's data and its end.
    #[test]
    fn kubectls_frames_decode() {
        let hex = |s: &str| {
            BytesMut::from(
                &(0..s.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                    .collect::<Vec<u8>>()[..],
            )
        };
        let mut wire = hex(KUBECTL_1_27_EXEC);
        let mut codec = Codec::default();
        let mut seen = vec![];
        while let Some(f) = codec.decode(&mut wire).unwrap() {
            seen.push(f);
        }
        let types: Vec<_> = seen
            .iter()
            .filter_map(|f| match f {
                Frame::SynStream {
                    stream, headers, ..
                } => Some((*stream, header(headers, "streamtype").unwrap().to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(
            types,
            [
                (1, "error".to_string()),
                (3, "stdin".to_string()),
                (5, "stdout".to_string()),
                (7, "stderr".to_string())
            ]
        );
        assert_eq!(
            seen[4..],
            [
                Frame::Data {
                    stream: 3,
                    fin: false,
                    data: Bytes::from_static(b"one\ntwo\nthree\n")
                },
                Frame::Data {
                    stream: 3,
                    fin: true,
                    data: Bytes::new()
                }
            ]
        );
    }

    /// A client may send on a stream before it has opened all of them (stdin's data, then the
    /// stdout stream): the data reaches the session, after the streams' replies.
    #[tokio::test]
    async fn data_sent_before_the_last_stream_opens_is_kept() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(accept(server, &[("error", 3), ("stdin", 0), ("stdout", 1)]));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut codec = Codec::default();
        let syn = |stream, kind: &str| Frame::SynStream {
            stream,
            fin: false,
            headers: pairs(&[("streamtype", kind)]),
        };
        let sent = [
            syn(1, "error"),
            syn(3, "stdin"),
            Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"early\n"),
            },
            syn(5, "stdout"),
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"late\n"),
            },
        ];
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        for f in &sent {
            wr.write_all(&codec.encode(f).unwrap()).await.unwrap();
        }
        let mut s = session.await.unwrap().expect("the streams were opened");
        assert_eq!(s.streams, [(3, 1), (0, 3), (1, 5)]);
        let got = [s.data.recv().await, s.data.recv().await];
        assert_eq!(
            got,
            [
                Some((3, Bytes::from_static(b"early\n"), false)),
                Some((3, Bytes::from_static(b"late\n"), true)),
            ]
        );
        // each stream was answered
        let mut wire = BytesMut::new();
        let mut replies = vec![];
        while replies.len() < 3 {
            match codec.decode(&mut wire).unwrap() {
                Some(Frame::SynReply { stream, .. }) => replies.push(stream),
                Some(other) => panic!("{other:?}"),
                None => assert!(rd.read_buf(&mut wire).await.unwrap() > 0),
            }
        }
        assert_eq!(replies, [1, 3, 5]);
    }

    const KUBECTL_1_27_EXEC: &str = concat!(
        "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800",
        "000000ffff800300010000001700000003000000000000c22e555c92929907000000ffff8003000100000019",
        "00000005000000000000c22ac5565c92925f5a02000000ffff800300010000001500000007000000000000c2",
        "29975a5404000000ffff000000030000000e6f6e650a74776f0a74687265650a0000000301000000",
    );
}
