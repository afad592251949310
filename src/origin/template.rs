//! [`OriginTemplate`]: an `http://` URL with one `{key}` placeholder, parsed
//! and resolved once, before any data core starts.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

const PLACEHOLDER: &str = "{key}";
const DEFAULT_PORT: u16 = 80;

/// Bytes of a key that are percent-encoded: everything except the
/// unreserved set of RFC 3986 (`A-Z a-z 0-9 - . _ ~`). Bytes >= 0x80 are
/// always encoded.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where a missing key's value comes from: `http://host[:port]/path?query`
/// with exactly one `{key}` in the path or query. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OriginTemplate {
    /// The request target up to `{key}` (always starts with `/`).
    before: String,
    /// The request target after `{key}`.
    after: String,
    /// `host[:port]` as written; the Host header.
    authority: String,
    /// Resolved once, by [`OriginTemplate::parse`].
    addr: SocketAddr,
}

impl OriginTemplate {
    /// Parses e.g. `"http://127.0.0.1:8000/items/{key}"`. Only `http://`
    /// (no https). Exactly one `{key}`, in the path or query. The host may
    /// be an IPv4 literal, a bracketed IPv6 literal or a name; the port
    /// defaults to 80.
    ///
    /// A name is resolved here, once, with the system resolver (the first
    /// address it returns is used): data cores must never block on DNS.
    /// The error is a one-line reason.
    pub fn parse(template: &str) -> Result<OriginTemplate, String> {
        let shown = shorten(template);
        let fail = |why: &str| format!("origin template {shown:?}: {why}");

        if let Some(c) = template.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(fail(&format!(
                "contains {c:?}; only printable ASCII without spaces is allowed \
                 (percent-encode anything else)"
            )));
        }
        let rest = match strip_prefix_ignore_case(template, "http://") {
            Some(rest) => rest,
            None if strip_prefix_ignore_case(template, "https://").is_some() => {
                return Err(fail(
                    "https is not supported, only plain http:// \
                     (put a TLS-terminating proxy next to the node)",
                ))
            }
            None => return Err(fail("must start with http://")),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains(['{', '}']) {
            return Err(fail("{key} must be in the path or query, not in the host"));
        }
        if target.contains('#') {
            return Err(fail("a #fragment is not allowed"));
        }
        let (before, after) = match target.split_once(PLACEHOLDER) {
            None => return Err(fail("has no {key} placeholder")),
            Some((_, after)) if after.contains(PLACEHOLDER) => {
                return Err(fail("has more than one {key} placeholder"))
            }
            Some(parts) => parts,
        };
        if before.contains(['{', '}']) || after.contains(['{', '}']) {
            return Err(fail(
                "has a brace outside {key}; {key} is the only placeholder \
                 (percent-encode literal braces as %7B and %7D)",
            ));
        }
        // "http://host?k={key}" has an empty path, which is sent as "/".
        let before = if before.starts_with('/') {
            before.to_string()
        } else {
            format!("/{before}")
        };

        let (host, port) = split_authority(authority).map_err(|why| fail(&why))?;
        let addr = match host {
            Host::Ip(ip) => SocketAddr::new(ip, port),
            Host::Name(name) => resolve(name, port).map_err(|why| fail(&why))?,
        };
        Ok(OriginTemplate {
            before,
            after: after.to_string(),
            authority: authority.to_string(),
            addr,
        })
    }

    /// The request target for `key`: the template's path and query with
    /// `{key}` replaced by the key percent-encoded (every byte outside
    /// `A-Z a-z 0-9 - . _ ~`; keys are arbitrary bytes), so the key stays
    /// one path segment: `/` goes as `%2F`, and a key of `.` or `..` goes as
    /// `%2E` / `%2E%2E`, never as a dot segment that a server removing dot
    /// segments (RFC 3986 §5.2.4) would resolve to the template's parent.
    pub fn target_for(&self, key: &[u8]) -> String {
        let mut target =
            String::with_capacity(self.before.len() + key.len() * 3 + self.after.len());
        target.push_str(&self.before);
        if is_dot_segment(key) {
            for _ in key {
                target.push_str("%2E");
            }
        } else {
            // Writing into a String cannot fail.
            let _ = write!(target, "{}", percent_encode(key, KEY_ENCODE));
        }
        target.push_str(&self.after);
        target
    }

    /// The origin's socket address, resolved by [`OriginTemplate::parse`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Host header value: `host[:port]` as written in the template.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// `.` and `..`: the segments RFC 3986 §5.2.4 removes or resolves. Any
/// other key, dots included (`...`, `a.b`), is an ordinary segment once its
/// `/` bytes are encoded.
fn is_dot_segment(key: &[u8]) -> bool {
    matches!(key, b"." | b"..")
}

enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// Splits `host[:port]` (host possibly `[v6]`) and checks both parts.
fn split_authority(authority: &str) -> Result<(Host<'_>, u16), String> {
    if authority.is_empty() {
        return Err("has no host".into());
    }
    if authority.contains('@') {
        return Err("user info (user@host) is not supported".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, tail)) = bracketed.split_once(']') else {
            return Err("IPv6 literal is missing its closing ']'".into());
        };
        let ip: Ipv6Addr = inside.parse().map_err(|_| {
            format!(
                "[{}] is not an IPv6 address (zone ids are not supported)",
                shorten(inside)
            )
        })?;
        let port = match tail {
            "" => None,
            _ => match tail.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err("unexpected text after the IPv6 literal".into()),
            },
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        if authority.matches(':').count() > 1 {
            return Err("IPv6 literals must be in brackets, like http://[::1]:8000/".into());
        }
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let host = match host.parse::<Ipv4Addr>() {
            Ok(ip) => Host::Ip(IpAddr::V4(ip)),
            Err(_) if is_host_name(host) => Host::Name(host),
            Err(_) => return Err(format!("{:?} is not a valid host name", shorten(host))),
        };
        (host, port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(format!("bad port {:?} (want 1-65535)", shorten(p))),
        },
    };
    Ok((host, port))
}

fn is_host_name(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn resolve(name: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = (name, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {name:?}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {name:?} resolved to no address"))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// At most 200 characters of `s`, for error messages.
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> OriginTemplate {
        OriginTemplate::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    fn refuse(t: &str, why: &str) {
        let err = OriginTemplate::parse(t).expect_err(t);
        assert!(err.contains(why), "{t:?}: {err:?} should mention {why:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }

    #[test]
    fn parses_ip_literals_and_ports() {
        let t = parse("http://127.0.0.1:8000/items/{key}");
        assert_eq!(t.addr(), "127.0.0.1:8000".parse().unwrap());
        assert_eq!(t.authority(), "127.0.0.1:8000");
        assert_eq!(t.target_for(b"abc"), "/items/abc");

        let t = parse("HTTP://10.1.2.3/v/{key}.json");
        assert_eq!(t.addr(), "10.1.2.3:80".parse().unwrap());
        assert_eq!(t.authority(), "10.1.2.3");
        assert_eq!(t.target_for(b"k"), "/v/k.json");

        let t = parse("http://[::1]:9000/x?key={key}&v=2");
        assert_eq!(t.addr(), "[::1]:9000".parse().unwrap());
        assert_eq!(t.authority(), "[::1]:9000");
        assert_eq!(t.target_for(b"a b"), "/x?key=a%20b&v=2");

        let t = parse("http://[fe80::1]/{key}");
        assert_eq!(t.addr(), "[fe80::1]:80".parse().unwrap());
        assert_eq!(t.authority(), "[fe80::1]");
    }

    #[test]
    fn placeholder_in_the_query_with_an_empty_path() {
        let t = parse("http://127.0.0.1:81?k={key}");
        assert_eq!(t.target_for(b"x"), "/?k=x");
        assert_eq!(t.authority(), "127.0.0.1:81");
    }

    #[test]
    fn resolves_names_once() {
        let t = parse("http://localhost:8123/{key}");
        assert!(t.addr().ip().is_loopback(), "{:?}", t.addr());
        assert_eq!(t.addr().port(), 8123);
        assert_eq!(t.authority(), "localhost:8123");
        refuse("http://no-such-host.invalid/{key}", "no-such-host.invalid");
    }

    #[test]
    fn refuses_bad_templates() {
        refuse("https://127.0.0.1/{key}", "https is not supported");
        refuse("HTTPS://127.0.0.1/{key}", "https is not supported");
        refuse("ftp://127.0.0.1/{key}", "must start with http://");
        refuse("127.0.0.1:80/{key}", "must start with http://");
        refuse("", "must start with http://");
        refuse("http://127.0.0.1/items", "no {key}");
        refuse("http://127.0.0.1/{key}/{key}", "more than one {key}");
        refuse("http://127.0.0.1/{id}/{key}", "brace");
        refuse("http://127.0.0.1/{key}}", "brace");
        refuse("http://{key}.example/x", "not in the host");
        refuse("http://127.0.0.1/{key}#frag", "fragment");
        refuse("http:///{key}", "no host");
        refuse("http://:80/{key}", "no host");
        refuse("http://user:pw@127.0.0.1/{key}", "user info");
        refuse("http://127.0.0.1:0/{key}", "bad port");
        refuse("http://127.0.0.1:65536/{key}", "bad port");
        refuse("http://127.0.0.1:+80/{key}", "bad port");
        refuse("http://127.0.0.1:/{key}", "bad port");
        refuse("http://::1/{key}", "brackets");
        refuse("http://[::1/{key}", "closing ']'");
        refuse("http://[::1]x/{key}", "after the IPv6 literal");
        refuse("http://[1.2.3.4]/{key}", "not an IPv6 address");
        refuse("http://bad%host/{key}", "not a valid host name");
        refuse("http://127.0.0.1/a b/{key}", "' '");
        refuse("http://127.0.0.1/{key}\r\nX: y", "'\\r'");
        refuse("http://127.0.0.1/é/{key}", "'é'");
    }

    #[test]
    fn keys_are_percent_encoded() {
        let t = parse("http://127.0.0.1:8000/items/{key}?v=1");
        assert_eq!(t.target_for(b"AZaz09-._~"), "/items/AZaz09-._~?v=1");
        assert_eq!(t.target_for(b"a/b"), "/items/a%2Fb?v=1");
        assert_eq!(t.target_for(b"a b"), "/items/a%20b?v=1");
        assert_eq!(t.target_for(&[0xff, 0x00, b'%']), "/items/%FF%00%25?v=1");
        assert_eq!(t.target_for(b"{key}"), "/items/%7Bkey%7D?v=1");
        assert_eq!(t.target_for(b"?&=#+"), "/items/%3F%26%3D%23%2B?v=1");
        assert_eq!(t.target_for("é".as_bytes()), "/items/%C3%A9?v=1");
        assert_eq!(t.target_for(b""), "/items/?v=1");
        // Every byte value comes out as printable ASCII only.
        let all: Vec<u8> = (0..=255).collect();
        let target = t.target_for(&all);
        assert!(target.bytes().all(|b| b.is_ascii_graphic()), "{target}");
        assert_eq!(target.len(), "/items/?v=1".len() + 66 + 190 * 3);
    }

    /// RFC 3986 §5.2.4 remove_dot_segments, as a server or proxy applies it
    /// to the raw path before it decodes percent-escapes.
    fn remove_dot_segments(path: &str) -> String {
        let mut out: Vec<&str> = Vec::new();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match *segment {
                "." => {
                    if last {
                        out.push("");
                    }
                }
                ".." => {
                    out.pop();
                    if last {
                        out.push("");
                    }
                }
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// What a server that normalises the path and then decodes each segment
    /// sees: the segments of the path, decoded.
    fn segments_seen(target: &str) -> Vec<Vec<u8>> {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        remove_dot_segments(path)
            .split('/')
            .skip(1)
            .map(|s| percent_encoding::percent_decode_str(s).collect())
            .collect()
    }

    #[test]
    fn dot_keys_cannot_climb_out_of_the_template_path() {
        let t = parse("http://127.0.0.1:8000/items/{key}");
        assert_eq!(t.target_for(b"."), "/items/%2E");
        assert_eq!(t.target_for(b".."), "/items/%2E%2E");
        let t = parse("http://127.0.0.1:8000/api/v2/items/{key}/raw?x=1");
        assert_eq!(t.target_for(b".."), "/api/v2/items/%2E%2E/raw?x=1");
        // Dots that are not a whole segment stay readable.
        assert_eq!(t.target_for(b"..."), "/api/v2/items/.../raw?x=1");
        assert_eq!(t.target_for(b"a.b"), "/api/v2/items/a.b/raw?x=1");
        assert_eq!(t.target_for(b"../x"), "/api/v2/items/..%2Fx/raw?x=1");

        // After normalisation every key is still exactly the one segment
        // between the template's prefix and suffix, byte for byte.
        for key in [
            &b"."[..],
            b"..",
            b"...",
            b"../..",
            b"../../etc/passwd",
            b"/",
            b"//",
            b"a/../../b",
            b"./.",
            b"%2E%2E",
            b"..%2F..",
            b"\\..\\",
        ] {
            let seen = segments_seen(&t.target_for(key));
            assert_eq!(
                seen,
                [&b"api"[..], b"v2", b"items", key, b"raw"],
                "key {:?} -> {}",
                String::from_utf8_lossy(key),
                t.target_for(key)
            );
        }
        // The same with {key} as the last segment.
        let t = parse("http://127.0.0.1:8000/items/{key}");
        for key in [&b"."[..], b"..", b"../..", b"a/b"] {
            assert_eq!(segments_seen(&t.target_for(key)), [&b"items"[..], key]);
        }
    }
}
