//! Who may call what: client bearer tokens and the cluster secret (pure).
//!
//! Three kinds of caller reach a node (see the README's *Security model*):
//!
//! - a **client** proves a token (`Authorization: Bearer <token>`, the same
//!   in gRPC metadata) once `--auth-token` is set; every route but the
//!   health checks needs it;
//! - a **peer node** proves the cluster secret (`x-nexuscache-cluster-secret`);
//!   only a peer may call `Peer/Replicate` or set `forwarded`/`keep_copy`,
//!   and a peer needs no token;
//! - an **operator** is a client: `/setpeer` and `/removepeer` need the token.
//!
//! With no token configured, clients are not asked for one; with no cluster
//! secret configured, every caller counts as a peer (an open cluster, which
//! protected mode refuses on non-loopback addresses). Comparisons run in
//! constant time over every configured credential, so neither a match's
//! position nor a prefix's length shows in the timing.

use std::path::Path;

use subtle::ConstantTimeEq;

/// Tokens or cluster secrets one node accepts at once.
pub const MAX_CREDENTIALS: usize = 16;
/// Shortest token or cluster secret accepted: guessing must not pay.
pub const MIN_CREDENTIAL_BYTES: usize = 16;
/// Longest token or cluster secret (it travels in a header).
pub const MAX_CREDENTIAL_BYTES: usize = 512;

/// Why configured tokens or secrets were refused; the message names the
/// flag and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(String);

/// The metadata/header a peer node sends its cluster secret in.
pub const CLUSTER_SECRET_HEADER: &str = "x-nexuscache-cluster-secret";
/// `WWW-Authenticate` value of a 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"nexuscache\"";

/// A token or secret; its bytes never reach a log or `Debug` output.
#[derive(Clone)]
struct Credential(Box<[u8]>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes, redacted>", self.0.len())
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send Authorization: Bearer <token>")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("{0} is for cluster nodes only: the caller did not prove the cluster secret")]
    PeerOnly(&'static str),
}

/// What a caller proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A client (with a valid token, or none is required).
    Client,
    /// A node of this cluster (proved the secret, or none is configured).
    Peer,
}

/// The valid client tokens and cluster secrets of one node.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    tokens: Vec<Credential>,
    secrets: Vec<Credential>,
}

impl Credentials {
    /// Tokens and secrets from their inline (comma-separated) and file
    /// (one per line, `#` comments) forms; validated for length and for
    /// bytes that can travel in a header.
    pub fn load(
        token: Option<&str>,
        token_file: Option<&Path>,
        secret: Option<&str>,
        secret_file: Option<&Path>,
    ) -> Result<Credentials, CredentialError> {
        Ok(Credentials {
            tokens: collect("--auth-token", token, token_file)?,
            secrets: collect("--cluster-secret", secret, secret_file)?,
        })
    }

    /// Credentials from literal values (tests, tools).
    pub fn from_values(tokens: &[&str], secrets: &[&str]) -> Result<Credentials, CredentialError> {
        let join = |v: &[&str]| (!v.is_empty()).then(|| v.join(","));
        Credentials::load(
            join(tokens).as_deref(),
            None,
            join(secrets).as_deref(),
            None,
        )
    }

    pub fn token_required(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn has_cluster_secret(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// The secret this node proves itself with to other nodes (the first
    /// configured; the others are only accepted, for rotation).
    pub fn outgoing_secret(&self) -> Option<&[u8]> {
        self.secrets.first().map(|s| &*s.0)
    }

    /// Checks an `Authorization` header value against the tokens.
    pub fn check_bearer(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let presented = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::MissingToken)?;
        if matches_any(&self.tokens, presented) {
            Ok(())
        } else {
            Err(AuthError::InvalidToken)
        }
    }

    /// Whether a presented cluster secret proves the caller is a peer.
    pub fn is_peer(&self, presented: Option<&[u8]>) -> bool {
        if self.secrets.is_empty() {
            return true;
        }
        presented.is_some_and(|p| matches_any(&self.secrets, p))
    }

    /// Who the caller is, from its `Authorization` and cluster-secret
    /// headers: a peer needs no token, anyone else needs one if set.
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        cluster_secret: Option<&[u8]>,
    ) -> Result<Caller, AuthError> {
        // A configured secret that was presented and matches: a peer.
        // Without a configured secret `is_peer` is true for everyone, but
        // clients must still show a token first.
        if self.has_cluster_secret() && self.is_peer(cluster_secret) {
            return Ok(Caller::Peer);
        }
        self.check_bearer(authorization)?;
        Ok(if self.has_cluster_secret() {
            Caller::Client
        } else {
            Caller::Peer
        })
    }
}

/// `Bearer <token>` (scheme case-insensitive, RFC 7235) -> the token.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Constant time in the presented value and over every credential: no
/// early exit on the first match.
fn matches_any(valid: &[Credential], presented: &[u8]) -> bool {
    let mut found = subtle::Choice::from(0u8);
    for credential in valid {
        found |= credential.0.ct_eq(presented);
    }
    found.into()
}

fn collect(
    flag: &str,
    inline: Option<&str>,
    file: Option<&Path>,
) -> Result<Vec<Credential>, CredentialError> {
    let mut values: Vec<String> = inline
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CredentialError(format!("{flag}-file: cannot read {}: {e}", path.display()))
        })?;
        let before = values.len();
        values.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
        if values.len() == before {
            return Err(CredentialError(format!(
                "{flag}-file: {} holds no value",
                path.display()
            )));
        }
    }
    if values.len() > MAX_CREDENTIALS {
        return Err(CredentialError(format!(
            "{flag}: {} values, at most {MAX_CREDENTIALS}",
            values.len()
        )));
    }
    values
        .into_iter()
        .map(|v| {
            if v.len() < MIN_CREDENTIAL_BYTES || v.len() > MAX_CREDENTIAL_BYTES {
                return Err(CredentialError(format!(
                    "{flag}: a value is {} bytes; use {MIN_CREDENTIAL_BYTES} to \
                     {MAX_CREDENTIAL_BYTES} (e.g. `openssl rand -hex 32`)",
                    v.len()
                )));
            }
            if !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(CredentialError(format!(
                    "{flag}: a value holds a byte that is not visible ASCII \
                     (it must fit in an HTTP header)"
                )));
            }
            Ok(Credential(v.into_bytes().into_boxed_slice()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "token-one-0123456789";
    const T2: &str = "token-two-0123456789";
    const S1: &str = "secret-one-0123456789";

    fn creds(tokens: &[&str], secrets: &[&str]) -> Credentials {
        Credentials::from_values(tokens, secrets).expect("valid credentials")
    }

    #[test]
    fn no_token_means_every_client_is_let_in() {
        let c = creds(&[], &[]);
        assert_eq!(c.check_bearer(None), Ok(()));
        assert_eq!(c.authorize(None, None), Ok(Caller::Peer));
    }

    #[test]
    fn bearer_tokens_are_checked_and_all_are_valid_at_once() {
        let c = creds(&[T1, T2], &[]);
        assert_eq!(c.check_bearer(None), Err(AuthError::MissingToken));
        assert_eq!(
            c.check_bearer(Some(b"Basic abc")),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            c.check_bearer(Some(b"Bearer ")),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            c.check_bearer(Some(format!("Bearer {T1}x").as_bytes())),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            c.check_bearer(Some(&format!("Bearer {T1}").as_bytes()[..20])),
            Err(AuthError::InvalidToken),
            "a prefix is not the token"
        );
        assert_eq!(
            c.check_bearer(Some(format!("Bearer {T1}").as_bytes())),
            Ok(())
        );
        assert_eq!(
            c.check_bearer(Some(format!("bearer  {T2} ").as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn a_peer_needs_the_secret_and_no_token() {
        let c = creds(&[T1], &[S1]);
        assert_eq!(c.authorize(None, Some(S1.as_bytes())), Ok(Caller::Peer));
        assert_eq!(
            c.authorize(Some(format!("Bearer {T1}").as_bytes()), None),
            Ok(Caller::Client)
        );
        assert_eq!(
            c.authorize(None, Some(b"secret-one-012345678X")),
            Err(AuthError::MissingToken)
        );
        assert_eq!(c.outgoing_secret(), Some(S1.as_bytes()));
        // A secret without tokens: clients get in, only as clients.
        let c = creds(&[], &[S1]);
        assert_eq!(c.authorize(None, None), Ok(Caller::Client));
        assert!(!c.is_peer(Some(b"nope")));
    }

    #[test]
    fn bad_values_are_refused_at_start_up() {
        assert!(Credentials::from_values(&["short"], &[]).is_err());
        assert!(Credentials::from_values(&["has a space in the middle"], &[]).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("token-number-{i:08}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Credentials::from_values(&many, &[]).is_err());
    }

    #[test]
    fn token_files_hold_one_value_per_line() {
        let dir = std::env::temp_dir().join(format!("nc-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, format!("# rotated 2026-12\n{T1}\n\n{T2}\n")).unwrap();
        let c = Credentials::load(None, Some(&file), None, None).unwrap();
        assert_eq!(
            c.check_bearer(Some(format!("Bearer {T2}").as_bytes())),
            Ok(())
        );
        std::fs::write(&file, "# nothing\n").unwrap();
        assert!(Credentials::load(None, Some(&file), None, None).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let text = format!("{:?}", creds(&[T1], &[S1]));
        assert!(!text.contains(T1) && !text.contains(S1), "{text}");
    }
}
