//! journald's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL): one datagram per entry on a
//! unix socket, each field `NAME=value\n`, or, when the value holds a newline (or any byte at
//! all, binary-safe), `NAME\n<u64 little-endian length><value>\n`. Encoding is pure; [`Journal`]
//! sends.
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// journald's rule: uppercase ASCII letters, digits and `_`, not starting with `_` (trusted
/// fields) or a digit, at most 64 characters.
pub fn valid_field_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && !b[0].is_ascii_digit()
        && b[0] != b'_'
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Appends one field. Values with a newline use the length-prefixed form, so any bytes go
/// through (invalid UTF-8, NUL, `\n`).
pub fn append_field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    debug_assert!(valid_field_name(name), "{name}");
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// Builds the entries of one container: the fields that never change are encoded once.
#[derive(Debug)]
pub struct Encoder {
    fixed: Vec<u8>,
    buf: Vec<u8>,
}

impl Encoder {
    /// `fields`: (name, value) pairs added to every entry; invalid names and empty values are
    /// left out.
    pub fn new<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Encoder {
        let mut fixed = Vec::new();
        for (k, v) in fields {
            if valid_field_name(k) && !v.is_empty() {
                append_field(&mut fixed, k, v.as_bytes());
            }
        }
        Encoder {
            fixed,
            buf: Vec::new(),
        }
    }

    /// One entry: MESSAGE, PRIORITY (syslog level 0-7), `CONTAINER_PARTIAL_MESSAGE=true` for a
    /// piece of a longer line (as Docker's journald driver marks them), then the fixed fields.
    pub fn entry(&mut self, priority: u8, message: &[u8], partial: bool) -> &[u8] {
        self.buf.clear();
        append_field(&mut self.buf, "MESSAGE", message);
        self.buf.extend_from_slice(b"PRIORITY=");
        self.buf.push(b'0' + priority.min(7));
        self.buf.push(b'\n');
        if partial {
            self.buf
                .extend_from_slice(b"CONTAINER_PARTIAL_MESSAGE=true\n");
        }
        self.buf.extend_from_slice(&self.fixed);
        &self.buf
    }
}

/// Decodes a datagram back into fields (for tests and diagnostics).
pub fn decode(mut d: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let nl = d.iter().position(|b| *b == b'\n')?;
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            out.push((
                String::from_utf8(line[..eq].to_vec()).ok()?,
                line[eq + 1..].to_vec(),
            ));
            d = &d[nl + 1..];
        } else {
            let name = String::from_utf8(line.to_vec()).ok()?;
            let rest = &d[nl + 1..];
            let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
            let value = rest.get(8..8 + len)?.to_vec();
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            out.push((name, value));
            d = &rest[9 + len..];
        }
    }
    Some(out)
}

/// A journald socket, written to without ever stalling the container for long: a send that
/// cannot go through within the timeout, or a journald that is not there, pauses sending for a
/// while (the file still gets every line) instead of blocking the pipe.
pub struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
    paused_until: Option<Instant>,
    /// Entries not delivered (journald absent, stalled or refusing).
    pub dropped: u64,
}

const SEND_TIMEOUT: Duration = Duration::from_secs(1);
const PAUSE: Duration = Duration::from_secs(5);

impl Journal {
    pub fn new(path: &Path) -> io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Journal {
            sock,
            path: path.to_path_buf(),
            paused_until: None,
            dropped: 0,
        })
    }

    /// Sends an empty datagram, which journald ignores: fails when nothing listens.
    pub fn probe(&self) -> io::Result<()> {
        self.sock.send_to(&[], &self.path).map(|_| ())
    }

    /// Sends one entry; false when it was not delivered.
    pub fn send(&mut self, entry: &[u8]) -> bool {
        if let Some(t) = self.paused_until {
            if Instant::now() < t {
                self.dropped += 1;
                return false;
            }
            self.paused_until = None;
        }
        loop {
            match self.sock.send_to(entry, &self.path) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // this entry alone is too large for a datagram: journald is fine, keep sending
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    self.dropped += 1;
                    return false;
                }
                Err(_) => {
                    self.dropped += 1;
                    self.paused_until = Some(Instant::now() + PAUSE);
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_follow_journald_rules() {
        for ok in ["MESSAGE", "CONTAINER_ID", "A1", "X_"] {
            assert!(valid_field_name(ok), "{ok}");
        }
        for bad in ["", "_PID", "1A", "message", "A-B", &"A".repeat(65)] {
            assert!(!valid_field_name(bad), "{bad}");
        }
    }

    #[test]
    fn simple_values_are_name_equals_value() {
        let mut b = Vec::new();
        append_field(&mut b, "POD", b"node-monitor-abc");
        append_field(&mut b, "EMPTY", b"");
        assert_eq!(b, b"POD=node-monitor-abc\nEMPTY=\n");
    }

    #[test]
    fn values_with_newlines_or_binary_are_length_prefixed_and_round_trip() {
        let mut b = Vec::new();
        append_field(&mut b, "MESSAGE", b"two\nlines");
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(b, want);
        let binary: Vec<u8> = (0..=255u8).collect();
        let mut e = Encoder::new([("CONTAINER_NAME", "main"), ("bad name", "x"), ("NODE", "")]);
        let entry = e.entry(3, &binary, true).to_vec();
        assert_eq!(
            decode(&entry).unwrap(),
            vec![
                ("MESSAGE".to_string(), binary.clone()),
                ("PRIORITY".to_string(), b"3".to_vec()),
                ("CONTAINER_PARTIAL_MESSAGE".to_string(), b"true".to_vec()),
                ("CONTAINER_NAME".to_string(), b"main".to_vec()),
            ]
        );
        let entry = e.entry(6, b"\xff\xfe not utf-8 = fine", false).to_vec();
        assert_eq!(
            entry,
            b"MESSAGE=\xff\xfe not utf-8 = fine\nPRIORITY=6\nCONTAINER_NAME=main\n"
        );
    }

    #[test]
    fn a_missing_journald_pauses_sending_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::new(&dir.path().join("nobody")).unwrap();
        assert!(!j.send(b"MESSAGE=x\n"));
        assert!(!j.send(b"MESSAGE=y\n"));
        assert_eq!(j.dropped, 2);
        // a real listener receives the datagram as built
        let path = dir.path().join("socket");
        let rx = UnixDatagram::bind(&path).unwrap();
        let mut j = Journal::new(&path).unwrap();
        let mut e = Encoder::new([("SYSLOG_IDENTIFIER", "main")]);
        assert!(j.send(e.entry(6, b"hi", false)));
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"MESSAGE=hi\nPRIORITY=6\nSYSLOG_IDENTIFIER=main\n"
        );
    }
}
