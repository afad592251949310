//! A small blocking Redis protocol client for the RESP tests: sends raw
//! bytes or commands, reads RESP2/RESP3 replies into [`Value`]s, and tells
//! a closed connection from a silent one. Only `std`.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The RESP port of a node started with the default (HTTP port + 2000).
pub fn resp_port(http_port: u16) -> u16 {
    http_port + 2000
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// RESP2 `$-1` / `*-1`, RESP3 `_`.
    Nil,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Double(String),
    Bool(bool),
    Verbatim(String, Vec<u8>),
}

impl Value {
    pub fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// The text of a bulk, simple or verbatim string.
    pub fn text(&self) -> String {
        match self {
            Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(b).into_owned(),
            Value::Simple(s) | Value::Error(s) | Value::Double(s) => s.clone(),
            other => format!("{other:?}"),
        }
    }

    pub fn is_error_starting(&self, prefix: &str) -> bool {
        matches!(self, Value::Error(e) if e.starts_with(prefix))
    }

    /// A map's value under `key` (RESP3 map or RESP2 flat array).
    pub fn field(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs.iter().find(|(k, _)| k.text() == key).map(|(_, v)| v),
            Value::Array(items) => items
                .chunks(2)
                .find(|pair| pair[0].text() == key)
                .and_then(|pair| pair.get(1)),
            _ => None,
        }
    }
}

pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::try_connect(port).unwrap_or_else(|e| panic!("connect to RESP port {port}: {e}"))
    }

    pub fn try_connect(port: u16) -> io::Result<Client> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .unwrap();
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).expect("send");
    }

    pub fn try_send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(raw)
    }

    pub fn shutdown_write(&self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Write);
    }

    /// Sends one command as a multibulk array and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let raw = encode(args.iter().map(|a| a.as_bytes()));
        self.send(&raw);
        self.read()
            .unwrap_or_else(|e| panic!("reply to {args:?}: {e}"))
    }

    /// The buffered reader, for tests that check exact reply bytes.
    pub fn reader_mut(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    pub fn read(&mut self) -> io::Result<Value> {
        read_value(&mut self.reader)
    }

    /// Waits for the server to close: `Ok(bytes it sent first)` or an
    /// error if it is still open after `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let start = Instant::now();
        self.set_read_timeout(Duration::from_millis(100));
        let mut got = self.reader.buffer().to_vec();
        let consumed = got.len();
        self.reader.consume(consumed);
        let mut chunk = [0u8; 4096];
        loop {
            match self.reader.get_mut().read(&mut chunk) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(got),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if start.elapsed() > timeout {
                        return Err(format!(
                            "still open after {timeout:?}; got {:?}",
                            String::from_utf8_lossy(&got)
                        ));
                    }
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// A command as RESP multibulk.
pub fn encode<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let args: Vec<&[u8]> = args.into_iter().collect();
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn encode_str(args: &[&str]) -> Vec<u8> {
    encode(args.iter().map(|a| a.as_bytes()))
}

fn line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut raw = Vec::new();
    reader.read_until(b'\n', &mut raw)?;
    if raw.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !raw.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line without CRLF: {:?}", String::from_utf8_lossy(&raw)),
        ));
    }
    raw.truncate(raw.len() - 2);
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn number(text: &str) -> io::Result<i64> {
    text.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad number {text:?}")))
}

fn payload(reader: &mut impl BufRead, len: i64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0) + 2];
    reader.read_exact(&mut bytes)?;
    if !bytes.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bulk without CRLF",
        ));
    }
    bytes.truncate(bytes.len() - 2);
    Ok(bytes)
}

pub fn read_value(reader: &mut impl BufRead) -> io::Result<Value> {
    let l = line(reader)?;
    let (kind, rest) = l.split_at(1.min(l.len()));
    Ok(match kind {
        "+" => Value::Simple(rest.into()),
        "-" => Value::Error(rest.into()),
        ":" => Value::Int(number(rest)?),
        "$" => match number(rest)? {
            -1 => Value::Nil,
            n => Value::Bulk(payload(reader, n)?),
        },
        "*" => match number(rest)? {
            -1 => Value::Nil,
            n => Value::Array(
                (0..n)
                    .map(|_| read_value(reader))
                    .collect::<io::Result<_>>()?,
            ),
        },
        "%" => {
            let n = number(rest)?;
            let mut pairs = Vec::new();
            for _ in 0..n {
                pairs.push((read_value(reader)?, read_value(reader)?));
            }
            Value::Map(pairs)
        }
        "~" => Value::Set(
            (0..number(rest)?)
                .map(|_| read_value(reader))
                .collect::<io::Result<_>>()?,
        ),
        "_" => Value::Nil,
        "," => Value::Double(rest.into()),
        "#" => Value::Bool(rest == "t"),
        "=" => {
            let body = payload(reader, number(rest)?)?;
            let format = String::from_utf8_lossy(&body[..3.min(body.len())]).into_owned();
            Value::Verbatim(format, body.get(4..).unwrap_or_default().to_vec())
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown reply type in {l:?}"),
            ))
        }
    })
}
