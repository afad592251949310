//! Key names: how a key index (what `workload` draws) becomes the key's
//! bytes on the wire.
//!
//! Two sources: `<key-prefix><decimal index>` (the default, nothing stored
//! per key) or the lines of `--key-file`, where index `i` is the `i`-th
//! key of the file. A transport converts the raw names once into its wire
//! form (HTTP: percent-encoded; gRPC: raw bytes) with [`KeyNames::map`], so
//! encoding a request stays a couple of `memcpy`s.

use std::path::Path;
use std::sync::Arc;

/// Problems with `--key-file`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("cannot read --key-file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("--key-file {0} holds no keys (one key per line; empty lines are skipped)")]
    Empty(String),
}

/// Maps key indices to key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyNames {
    /// `<prefix><decimal index>`.
    Numbered { prefix: Arc<[u8]> },
    /// Index `i` is the `i`-th entry.
    List(Arc<[Box<[u8]>]>),
}

impl KeyNames {
    pub fn numbered(prefix: &str) -> KeyNames {
        KeyNames::Numbered {
            prefix: prefix.as_bytes().into(),
        }
    }

    pub fn list(keys: Vec<Vec<u8>>) -> KeyNames {
        KeyNames::List(keys.into_iter().map(Vec::into_boxed_slice).collect())
    }

    /// Reads one key per line. A trailing `\r` is dropped (files written on
    /// Windows) and empty lines are skipped; every other byte is part of the
    /// key, so keys may hold spaces or any non-newline byte.
    pub fn from_file(path: &Path) -> Result<KeyNames, KeyFileError> {
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|e| KeyFileError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let keys = parse_key_lines(&data);
        if keys.is_empty() {
            return Err(KeyFileError::Empty(shown));
        }
        Ok(KeyNames::list(keys))
    }

    /// Number of keys in a list; `None` for numbered keys (any index works).
    pub fn list_len(&self) -> Option<u64> {
        match self {
            KeyNames::Numbered { .. } => None,
            KeyNames::List(keys) => Some(keys.len() as u64),
        }
    }

    /// The same names in another form: `f` applies to the prefix (numbered
    /// keys; digits need no encoding anywhere) or to every listed key.
    pub fn map(&self, f: impl Fn(&[u8]) -> Vec<u8>) -> KeyNames {
        match self {
            KeyNames::Numbered { prefix } => KeyNames::Numbered {
                prefix: f(prefix).into(),
            },
            KeyNames::List(keys) => {
                KeyNames::List(keys.iter().map(|k| f(k).into_boxed_slice()).collect())
            }
        }
    }

    /// Appends the name of key `index`. For a list, `index` must be below
    /// its length (the sampler draws from `0..len`); it wraps otherwise.
    #[inline]
    pub fn write(&self, index: u64, out: &mut Vec<u8>) {
        match self {
            KeyNames::Numbered { prefix } => {
                out.extend_from_slice(prefix);
                push_decimal(out, index);
            }
            KeyNames::List(keys) => {
                out.extend_from_slice(&keys[(index % keys.len() as u64) as usize])
            }
        }
    }

    /// Length in bytes of the name of key `index`.
    #[inline]
    pub fn len(&self, index: u64) -> usize {
        match self {
            KeyNames::Numbered { prefix } => prefix.len() + decimal_len(index),
            KeyNames::List(keys) => keys[(index % keys.len() as u64) as usize].len(),
        }
    }

    /// The name of key `index` as an owned vector (tests, diagnostics).
    #[cfg(test)]
    pub fn name(&self, index: u64) -> Vec<u8> {
        let mut v = Vec::new();
        self.write(index, &mut v);
        v
    }
}

/// Splits a key file into keys (see [`KeyNames::from_file`]).
pub fn parse_key_lines(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Appends the decimal form of `n`.
#[inline]
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Number of decimal digits of `n`.
#[inline]
pub fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names() {
        let k = KeyNames::numbered("key:");
        assert_eq!(k.name(0), b"key:0");
        assert_eq!(k.name(1_234_567), b"key:1234567");
        assert_eq!(k.len(1_234_567), 11);
        assert_eq!(k.list_len(), None);
        let enc = k.map(|p| p.iter().map(u8::to_ascii_uppercase).collect());
        assert_eq!(enc.name(42), b"KEY:42");
    }

    #[test]
    fn listed_names() {
        let k = KeyNames::list(vec![b"a b".to_vec(), b"zz".to_vec()]);
        assert_eq!(k.list_len(), Some(2));
        assert_eq!(k.name(0), b"a b");
        assert_eq!((k.name(1), k.len(1)), (b"zz".to_vec(), 2));
        let enc = k.map(crate::http::percent_encode);
        assert_eq!(enc.name(0), b"a%20b");
    }

    #[test]
    fn key_file_lines() {
        assert_eq!(
            parse_key_lines(b"one\r\ntwo\n\n three \nlast"),
            vec![
                b"one".to_vec(),
                b"two".to_vec(),
                b" three ".to_vec(),
                b"last".to_vec()
            ]
        );
        assert!(parse_key_lines(b"\n\r\n").is_empty());
        let dir = std::env::temp_dir().join(format!("nc-bench-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.txt");
        std::fs::write(&path, "x\ny\n").unwrap();
        assert_eq!(KeyNames::from_file(&path).unwrap().list_len(), Some(2));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            KeyNames::from_file(&path),
            Err(KeyFileError::Empty(_))
        ));
        assert!(matches!(
            KeyNames::from_file(&dir.join("missing")),
            Err(KeyFileError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn decimals() {
        for n in [0u64, 9, 10, 99, 100, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
            assert_eq!(decimal_len(n), v.len());
        }
    }
}
