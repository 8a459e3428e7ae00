//! Reading an OCI image layout packed as a tar archive (`index.json`, `oci-layout`,
//! `blobs/sha256/...`), as `ctr images import` accepts, for nodes without a registry.
//! The `tar` crate walks the headers (ustar, pax and GNU long names); only each regular file's
//! name, data offset and size are kept, and a file is read when it is asked for.
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What failed while reading an archive, with the I/O error as the cause.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {name} in {}", path.display())]
    Entry {
        path: PathBuf,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no {name}", path.display())]
    Missing { path: PathBuf, name: String },
    #[error("unsupported digest {0}")]
    Digest(String),
    #[error("blob {0} does not match its digest")]
    Mismatch(String),
}

type Result<T> = std::result::Result<T, ArchiveError>;

pub struct Archive {
    path: PathBuf,
    /// entry name (without a leading `./`) -> (data offset, size)
    entries: HashMap<String, (u64, u64)>,
}

fn clean(name: &Path) -> String {
    let name = name.to_string_lossy();
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

impl Archive {
    pub fn open(path: &Path) -> Result<Archive> {
        let read = |source| ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(read)?;
        let mut tar = tar::Archive::new(f);
        let mut entries = HashMap::new();
        // seeks over the data of each entry instead of reading it
        for entry in tar.entries_with_seek().map_err(read)? {
            let entry = entry.map_err(read)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = clean(&entry.path().map_err(read)?);
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(Archive {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The contents of entry `name`.
    pub fn file(&self, name: &str) -> Result<Vec<u8>> {
        let (at, size) = *self
            .entries
            .get(name)
            .ok_or_else(|| ArchiveError::Missing {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(&self.path)?;
            f.seek(SeekFrom::Start(at))?;
            let mut data = vec![0u8; size as usize];
            f.read_exact(&mut data)?;
            Ok(data)
        };
        read().map_err(|source| ArchiveError::Entry {
            path: self.path.clone(),
            name: name.to_string(),
            source,
        })
    }

    /// The blob `sha256:<hex>`, verified against its digest.
    pub fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let hex_part = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| ArchiveError::Digest(digest.to_string()))?;
        let data = self.file(&format!("blobs/sha256/{hex_part}"))?;
        if hex::encode(Sha256::digest(&data)) != hex_part {
            return Err(ArchiveError::Mismatch(digest.to_string()));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
