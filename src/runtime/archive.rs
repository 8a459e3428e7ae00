//! Reading an OCI image layout packed as a tar archive (`index.json`, `oci-layout`,
//! `blobs/sha256/...`), as `ctr images import` accepts, for nodes without a registry.
//! A small ustar/pax/GNU reader: only the entry names, offsets and sizes are kept.
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub struct Archive {
    path: PathBuf,
    /// entry name (without a leading `./`) -> (data offset, size)
    entries: HashMap<String, (u64, u64)>,
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).to_string()
}

/// A tar numeric field: octal text, or base-256 when the high bit of the first byte is set.
fn number(b: &[u8]) -> Result<u64, String> {
    if b.first().is_some_and(|c| c & 0x80 != 0) {
        let mut v: u64 = u64::from(b[0] & 0x7f);
        for c in &b[1..] {
            v = v.checked_mul(256).ok_or("tar size overflows")? + u64::from(*c);
        }
        return Ok(v);
    }
    let s = cstr(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| format!("bad tar number {s:?}"))
}

fn clean(name: &str) -> String {
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// The `path` record of a pax extended header.
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|rec| {
        let (_, kv) = rec.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_string)
    })
}

impl Archive {
    pub fn open(path: &Path) -> Result<Archive, String> {
        let mut f =
            std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let total = f.metadata().map_err(|e| e.to_string())?.len();
        let mut entries = HashMap::new();
        let mut pos: u64 = 0;
        let mut next_name: Option<String> = None;
        let mut header = [0u8; 512];
        while pos + 512 <= total {
            f.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
            f.read_exact(&mut header)
                .map_err(|e| format!("read tar header: {e}"))?;
            if header.iter().all(|b| *b == 0) {
                break;
            }
            let size = number(&header[124..136])?;
            let kind = header[156];
            let data_at = pos + 512;
            if data_at + size > total {
                return Err("truncated tar archive".into());
            }
            let mut name = cstr(&header[0..100]);
            if &header[257..262] == b"ustar" {
                let prefix = cstr(&header[345..500]);
                if !prefix.is_empty() {
                    name = format!("{prefix}/{name}");
                }
            }
            match kind {
                b'x' | b'L' => {
                    if size > 1 << 20 {
                        return Err("tar extended header too large".into());
                    }
                    let mut data = vec![0u8; size as usize];
                    f.read_exact(&mut data).map_err(|e| e.to_string())?;
                    next_name = if kind == b'x' {
                        pax_path(&data)
                    } else {
                        Some(cstr(&data))
                    };
                }
                b'0' | 0 => {
                    let name = next_name.take().unwrap_or(name);
                    entries.insert(clean(&name), (data_at, size));
                }
                _ => next_name = None,
            }
            pos = data_at + size.div_ceil(512) * 512;
        }
        Ok(Archive {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The contents of entry `name`.
    pub fn file(&self, name: &str) -> Result<Vec<u8>, String> {
        let (at, size) = *self
            .entries
            .get(name)
            .ok_or_else(|| format!("{} has no {name}", self.path.display()))?;
        let mut f = std::fs::File::open(&self.path).map_err(|e| e.to_string())?;
        f.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        let mut data = vec![0u8; size as usize];
        f.read_exact(&mut data)
            .map_err(|e| format!("read {name}: {e}"))?;
        Ok(data)
    }

    /// The blob `sha256:<hex>`, verified against its digest.
    pub fn blob(&self, digest: &str) -> Result<Vec<u8>, String> {
        let hex_part = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| format!("unsupported digest {digest}"))?;
        let data = self.file(&format!("blobs/sha256/{hex_part}"))?;
        if hex::encode(Sha256::digest(&data)) != hex_part {
            return Err(format!("blob {digest} does not match its digest"));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (field, want) in [
            (&b"0000644\0"[..], Ok(0o644)),
            (b"00000001750 ", Ok(1000)),
            (b"\0\0\0\0", Ok(0)),
            (&[0x80, 0, 0, 1, 0][..], Ok(256)),
            (b"9x", Err(())),
        ] {
            assert_eq!(number(field).map_err(|_| ()), want, "{field:?}");
        }
        assert_eq!(
            pax_path(b"30 path=blobs/sha256/abc\n20 mtime=1\n").as_deref(),
            Some("blobs/sha256/abc")
        );
    }

    #[test]
    fn reads_a_tar_written_by_tar() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("blobs/sha256")).unwrap();
        let blob = b"hello blob";
        let hexd = hex::encode(Sha256::digest(blob));
        std::fs::write(src.join("blobs/sha256").join(&hexd), blob).unwrap();
        std::fs::write(src.join("index.json"), b"{}").unwrap();
        let long = "d".repeat(150);
        std::fs::create_dir_all(src.join(&long)).unwrap();
        std::fs::write(src.join(&long).join("f"), b"long").unwrap();
        let tar = dir.path().join("a.tar");
        for format in ["gnu", "pax"] {
            let ok = std::process::Command::new("tar")
                .args(["--format", format, "-cf"])
                .arg(&tar)
                .arg("-C")
                .arg(&src)
                .arg(".")
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let a = Archive::open(&tar).unwrap();
            assert_eq!(a.file("index.json").unwrap(), b"{}");
            assert_eq!(a.blob(&format!("sha256:{hexd}")).unwrap(), blob);
            assert_eq!(a.file(&format!("{long}/f")).unwrap(), b"long", "{format}");
            assert!(a.blob(&format!("sha256:{}", "0".repeat(64))).is_err());
        }
    }
}
