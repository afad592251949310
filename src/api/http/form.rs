//! The fields of a request: `application/x-www-form-urlencoded` decoding
//! (query string and body) and the typed readers of one field, shared by
//! the plain routes (`route`) and the atomic ops (`mutate`).

use crate::error::ApiError;
use crate::ops::{Limits, MAX_TTL_SECONDS};

/// The seed API's `expire` is in minutes, at most three days.
pub const MAX_EXPIRE_MINUTES: u64 = MAX_TTL_SECONDS / 60;

pub(super) fn checked_key(
    key: &[u8],
    limits: &Limits,
    in_url: bool,
) -> Result<Box<[u8]>, ApiError> {
    limits
        .check_key(key)
        .map_err(|e| ApiError::from_limit(e, in_url))?;
    Ok(Box::from(key))
}

pub(super) fn parse_bounded(
    field: &'static str,
    text: &[u8],
    max: u64,
    unit: &str,
) -> Result<u64, ApiError> {
    let shown = String::from_utf8_lossy(text);
    let n: u64 = std::str::from_utf8(text)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            ApiError::invalid(field, format!("{shown:?} is not a whole number of {unit}"))
        })?;
    if n > max {
        return Err(ApiError::invalid(
            field,
            format!("{n} is out of range (0-{max} {unit})"),
        ));
    }
    Ok(n)
}

/// A boolean form field: absent, empty, `false` or `0` is false.
pub(super) fn parse_flag(field: &'static str, text: Option<&[u8]>) -> Result<bool, ApiError> {
    match text {
        None | Some(b"") | Some(b"false") | Some(b"0") => Ok(false),
        Some(b"true") | Some(b"1") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            field,
            format!(
                "{:?} is not a boolean (true, false, 1, 0)",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

/// Decoded `application/x-www-form-urlencoded` fields from the query string
/// and the body; a field in the body wins over the same field in the query.
pub(super) struct Form {
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) key_from_query: bool,
}

impl Form {
    pub(super) fn parse(query: &[u8], body: &[u8]) -> Result<Form, ApiError> {
        let mut fields = Vec::new();
        let mut key_from_query = false;
        for (source, from_query) in [(query, true), (body, false)] {
            for pair in source.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
                let (name, value) = match pair.iter().position(|&b| b == b'=') {
                    Some(i) => (&pair[..i], &pair[i + 1..]),
                    None => (pair, &b""[..]),
                };
                let name = percent_decode(name, true)?;
                let value = percent_decode(value, true)?;
                if name == b"key" {
                    key_from_query = from_query;
                }
                fields.push((name, value));
            }
        }
        Ok(Form {
            fields,
            key_from_query,
        })
    }

    /// Last occurrence wins, so body fields (parsed after the query) win.
    /// Borrowed: callers copy only what they keep.
    pub(super) fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    pub(super) fn key(&self, limits: &Limits, in_url: bool) -> Result<Box<[u8]>, ApiError> {
        checked_key(self.get("key").unwrap_or_default(), limits, in_url)
    }
}

/// Strict percent-decoding: a `%` must be followed by two hex digits.
/// `plus_is_space` applies form encoding, where `+` stands for a space.
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    input.get(i + 1).copied().and_then(hex),
                    input.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => {
                        return Err(ApiError::Malformed(format!(
                            "invalid percent-encoding at byte {i}"
                        )))
                    }
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}
