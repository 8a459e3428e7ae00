//! The CRI container log format, as containerd's CRI plugin writes it (pkg/cri/io/logger.go) and
//! the kubelet reads it: one record per line, `<RFC3339Nano> <stdout|stderr> <F|P> <message>\n`.
//! A line longer than [`MAX_LINE`] is cut into `P` (partial) records and ends with an `F` (full)
//! one; output that ends without a newline ends with a `P` record. Pure: no I/O, the time is an
//! argument.

/// The longest message of one record (containerd's `max_container_log_line_size` default).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Cuts one stream's bytes into records of at most [`MAX_LINE`] bytes. Holds at most one
/// unfinished line (bounded by `MAX_LINE`), whatever the input.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::new()
    }
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter {
            pending: Vec::new(),
        }
    }

    /// Feeds bytes as read from the stream; calls `emit(message, partial)` for every record they
    /// complete, in order. The newline is not part of the message; a `\r` before it is dropped,
    /// as the CRI plugin's line reader does.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let (part, newline) = match data.iter().position(|b| *b == b'\n') {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            self.append(part, emit);
            data = &data[part.len()..];
            if newline {
                data = &data[1..];
                if self.pending.last() == Some(&b'\r') {
                    self.pending.pop();
                }
                emit(&self.pending, false);
                self.pending.clear();
            }
        }
        if self.pending.capacity() > MAX_LINE && self.pending.is_empty() {
            self.pending.shrink_to(MAX_LINE);
        }
    }

    /// The stream ended: what is left (a line without its newline) becomes a partial record.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, true);
            self.pending.clear();
        }
    }

    fn append(&mut self, mut part: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !part.is_empty() {
            if self.pending.len() == MAX_LINE {
                emit(&self.pending, true);
                self.pending.clear();
            }
            let n = (MAX_LINE - self.pending.len()).min(part.len());
            self.pending.extend_from_slice(&part[..n]);
            part = &part[n..];
        }
    }
}

/// Appends one record to `out`. `unix_nanos` is the wall-clock time in nanoseconds since the
/// epoch (UTC); it is written as Go's RFC3339Nano does (trailing zeros of the fraction dropped).
pub fn format_record(
    out: &mut Vec<u8>,
    unix_nanos: i128,
    stream: Stream,
    partial: bool,
    msg: &[u8],
) {
    write_rfc3339_nano(out, unix_nanos);
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(msg);
    out.push(b'\n');
}

/// `2026-11-24T07:05:01.123456789Z`, fraction without trailing zeros (none at all when zero).
pub fn write_rfc3339_nano(out: &mut Vec<u8>, unix_nanos: i128) {
    use std::io::Write as _;
    let secs = unix_nanos.div_euclid(1_000_000_000) as i64;
    let nanos = unix_nanos.rem_euclid(1_000_000_000) as u32;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if nanos > 0 {
        let mut frac = nanos;
        let mut digits = 9;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{frac:0digits$}");
    }
    out.push(b'Z');
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One parsed record (borrowing the line it came from).
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a [u8],
    pub stream: Stream,
    pub partial: bool,
    pub message: &'a [u8],
}

/// Parses one line (without its newline) as a CRI record; None when it is not one.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let sp = line.iter().position(|b| *b == b' ')?;
    let timestamp = &line[..sp];
    if !looks_like_rfc3339(timestamp) {
        return None;
    }
    let rest = &line[sp + 1..];
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        return None;
    };
    let (partial, message) = match rest {
        [b'F', b' ', m @ ..] => (false, m),
        [b'P', b' ', m @ ..] => (true, m),
        // a record with an empty message written by something that drops the last delimiter
        [b'F'] => (false, &rest[1..]),
        [b'P'] => (true, &rest[1..]),
        _ => return None,
    };
    Some(Record {
        timestamp,
        stream,
        partial,
        message,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)`, checked by shape.
fn looks_like_rfc3339(t: &[u8]) -> bool {
    let digits =
        |r: std::ops::Range<usize>| t.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    t.len() >= 20
        && t.len() <= 35
        && digits(0..4)
        && t[4] == b'-'
        && digits(5..7)
        && t[7] == b'-'
        && digits(8..10)
        && t[10] == b'T'
        && digits(11..13)
        && t[13] == b':'
        && digits(14..16)
        && t[16] == b':'
        && digits(17..19)
}

/// Turns a container's log file back into what the container wrote, for `daemonset-agent logs`.
/// The file's format is decided by its first line: CRI records (written by the log driver) have
/// their prefix stripped and partial records joined; any other file (raw output, appended by the
/// shim for containers created before the log driver existed) passes through unchanged. Fed in
/// chunks (a followed file); holds at most one unfinished line.
#[derive(Debug)]
pub struct Decoder {
    mode: Mode,
    carry: Vec<u8>,
    timestamps: bool,
    at_line_start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Cri,
    Raw,
}

/// Longer than any CRI record: a "line" this long without a newline is not one.
const MAX_RECORD: usize = MAX_LINE + 128;

impl Decoder {
    /// `timestamps`: start every line with its record's timestamp and a space (CRI files only),
    /// as `kubectl logs --timestamps`.
    pub fn new(timestamps: bool) -> Decoder {
        Decoder {
            mode: Mode::Unknown,
            carry: Vec::new(),
            timestamps,
            at_line_start: true,
        }
    }

    /// Decodes `data` (the next bytes of the file) into `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        if self.mode == Mode::Raw {
            out.extend_from_slice(data);
            return;
        }
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            if self.carry.is_empty() {
                self.line(&data[..i], out);
            } else {
                self.carry.extend_from_slice(&data[..i]);
                let line = std::mem::take(&mut self.carry);
                self.line(&line, out);
                self.carry = line;
                self.carry.clear();
            }
            data = &data[i + 1..];
            if self.mode == Mode::Raw {
                out.extend_from_slice(data);
                return;
            }
        }
        self.carry.extend_from_slice(data);
        if self.carry.len() > MAX_RECORD {
            // not a record: pass it through as it is
            if self.mode == Mode::Unknown {
                self.mode = Mode::Raw;
            }
            out.extend_from_slice(&self.carry);
            self.carry.clear();
        }
    }

    /// The end of the file (no more data expected): an unfinished last line passes through.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.carry);
        self.carry.clear();
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let rec = match self.mode {
            Mode::Raw => None,
            Mode::Unknown => {
                let r = parse_record(line);
                self.mode = if r.is_some() { Mode::Cri } else { Mode::Raw };
                r
            }
            Mode::Cri => parse_record(line),
        };
        match rec {
            Some(r) => {
                if self.timestamps && self.at_line_start {
                    out.extend_from_slice(r.timestamp);
                    out.push(b' ');
                }
                out.extend_from_slice(r.message);
                if !r.partial {
                    out.push(b'\n');
                }
                self.at_line_start = !r.partial;
            }
            None => {
                out.extend_from_slice(line);
                out.push(b'\n');
                self.at_line_start = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut s = LineSplitter::new();
        let mut got = Vec::new();
        for c in chunks {
            s.push(c, &mut |m: &[u8], p| got.push((m.to_vec(), p)));
        }
        s.finish(&mut |m: &[u8], p| got.push((m.to_vec(), p)));
        got
    }

    fn rec(m: &[u8], partial: bool) -> (Vec<u8>, bool) {
        (m.to_vec(), partial)
    }

    #[test]
    fn lines_are_cut_at_newlines_whatever_the_chunks() {
        assert_eq!(
            split(&[b"hel", b"lo\nwor", b"ld\r\n", b"\n", b"tail"]),
            vec![
                rec(b"hello", false),
                rec(b"world", false),
                rec(b"", false),
                rec(b"tail", true)
            ]
        );
        assert_eq!(split(&[]), vec![]);
        // bytes are bytes: invalid UTF-8 and NULs go through untouched
        assert_eq!(
            split(&[b"\xff\x00\xc3(\n"]),
            vec![rec(b"\xff\x00\xc3(", false)]
        );
    }

    #[test]
    fn long_lines_split_into_partials_at_16k_as_cri_does() {
        let exact = vec![b'a'; MAX_LINE];
        let got = split(&[&exact, b"\n"]);
        assert_eq!(
            got,
            vec![rec(&exact, false)],
            "exactly 16 KiB is one full record"
        );
        let long = vec![b'b'; 2 * MAX_LINE + 5];
        let mut input = long.clone();
        input.push(b'\n');
        // fed one byte at a time and all at once, the records are the same
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        for got in [split(&[&input]), split(&bytes)] {
            assert_eq!(got.len(), 3);
            assert_eq!(got[0], rec(&long[..MAX_LINE], true));
            assert_eq!(got[1], rec(&long[MAX_LINE..2 * MAX_LINE], true));
            assert_eq!(got[2], rec(&long[2 * MAX_LINE..], false));
        }
        // a huge line never holds more than one record's worth of memory
        let mut s = LineSplitter::new();
        let chunk = vec![b'c'; 64 * 1024];
        let mut n = 0;
        for _ in 0..64 {
            s.push(&chunk, &mut |m: &[u8], p| {
                assert!(p && m.len() == MAX_LINE);
                n += 1;
            });
            assert!(s.pending.capacity() <= MAX_LINE);
        }
        assert_eq!(n, 64 * 4 - 1);
    }

    #[test]
    fn records_are_formatted_like_containerd_writes_them() {
        let mut out = Vec::new();
        // 2026-11-24T07:05:01.1234Z
        let t = 1_795_503_901_123_400_000i128;
        format_record(&mut out, t, Stream::Stdout, false, b"hello");
        format_record(&mut out, t - 123_400_000, Stream::Stderr, true, b"");
        format_record(&mut out, 1_000_000_001, Stream::Stdout, false, b"x y");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-24T07:05:01.1234Z stdout F hello\n\
             2026-11-24T07:05:01Z stderr P \n\
             1970-01-01T00:00:01.000000001Z stdout F x y\n"
        );
        let mut leap = Vec::new();
        write_rfc3339_nano(&mut leap, 951_782_400 * 1_000_000_000); // 2000-02-29
        assert_eq!(leap, b"2000-02-29T00:00:00Z");
    }

    #[test]
    fn records_parse_back_and_other_lines_do_not() {
        let r = parse_record(b"2026-11-24T07:05:01.1234Z stderr P a b ").unwrap();
        assert_eq!(
            r,
            Record {
                timestamp: b"2026-11-24T07:05:01.1234Z",
                stream: Stream::Stderr,
                partial: true,
                message: b"a b "
            }
        );
        let r = parse_record(b"2026-11-24T08:05:01.5+01:00 stdout F ").unwrap();
        assert_eq!(
            (r.stream, r.partial, r.message),
            (Stream::Stdout, false, &b""[..])
        );
        for not in [
            &b"hello world"[..],
            b"2026-11-24T07:05:01Z stdin F x",
            b"2026-11-24T07:05:01Z stdout X x",
            b"2026-11-24 07:05:01Z stdout F x",
            b"",
        ] {
            assert_eq!(
                parse_record(not),
                None,
                "{:?}",
                String::from_utf8_lossy(not)
            );
        }
    }

    fn decode(timestamps: bool, chunks: &[&[u8]]) -> String {
        let mut d = Decoder::new(timestamps);
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cri_files_decode_to_the_output_in_order_across_streams() {
        let file = "2026-11-24T07:05:01.1Z stdout F one\n\
                    2026-11-24T07:05:01.2Z stderr F two\n\
                    2026-11-24T07:05:01.3Z stdout P thr\n\
                    2026-11-24T07:05:01.3Z stdout F ee\n\
                    not a record\n\
                    2026-11-24T07:05:01.4Z stdout P no newline at the end\n";
        let want = "one\ntwo\nthree\nnot a record\nno newline at the end";
        assert_eq!(decode(false, &[file.as_bytes()]), want);
        let bytes: Vec<&[u8]> = file.as_bytes().chunks(3).collect();
        assert_eq!(decode(false, &bytes), want);
        assert_eq!(
            decode(true, &[file.as_bytes()])
                .lines()
                .take(3)
                .collect::<Vec<_>>(),
            [
                "2026-11-24T07:05:01.1Z one",
                "2026-11-24T07:05:01.2Z two",
                "2026-11-24T07:05:01.3Z three"
            ]
        );
    }

    #[test]
    fn raw_files_of_older_containers_pass_through() {
        let raw = "hello\n2026-11-24T07:05:01.1Z stdout F looks like a record\npartial";
        assert_eq!(decode(false, &[raw.as_bytes()]), raw);
        let bytes: Vec<&[u8]> = raw.as_bytes().chunks(4).collect();
        assert_eq!(decode(true, &bytes), raw);
        // one long raw line without newline is not held back forever
        let mut d = Decoder::new(false);
        let mut out = Vec::new();
        d.push(&vec![b'z'; MAX_RECORD + 1], &mut out);
        assert_eq!(out.len(), MAX_RECORD + 1);
    }
}
