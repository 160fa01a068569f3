//! The hand-written HTTP/1.1 that the in-process fakes share: an accept loop whose server
//! handle stops it and its connections when dropped, reading one request (by `Content-Length`
//! or chunked), multipart bodies, the request record of the fakes that keep headers, and
//! writing an answer, with a length or as a stream that ends at the close.
//!
//! The fakes read one request per connection and always answer `Connection: close`, so that a
//! test controls every byte and every flush. What a fake adds on top (its own headers, its
//! error bodies, the default content type) it passes in: this layer writes what it is given.

use std::future::Future;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A running accept loop; it and every connection it accepted stop when this is dropped.
pub struct Server(JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts connections on `listener` and serves each one with `serve`, given a clone of
/// `state`, until the returned handle is dropped. Sockets are set to no delay, so that every
/// flush reaches the client as a write of its own.
pub fn serve<S, F, Fut>(listener: TcpListener, state: S, serve: F) -> Server
where
    S: Clone + Send + 'static,
    F: Fn(TcpStream, S) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Server(tokio::spawn(async move {
        // Dropping the set (when the loop is aborted) aborts the connections.
        let mut connections = JoinSet::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            // Without no-delay the answer is only slower, so a failure is not fatal.
            let _ = socket.set_nodelay(true);
            while connections.try_join_next().is_some() {}
            connections.spawn(serve(socket, state.clone()));
        }
    }))
}

/// One request as read from the socket.
pub struct Request {
    pub method: String,
    /// The request target as sent: the path with its query, percent-encoded.
    pub target: String,
    /// Names lowercased, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, decoded when it was chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// One request as a fake that keeps headers records it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path with its query, as sent (percent-encoded).
    pub path: String,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The JSON body; `Null` when empty, a string when not JSON.
    pub body: Value,
}

impl Recorded {
    /// The value of the first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl From<Request> for Recorded {
    fn from(request: Request) -> Recorded {
        let body = if request.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&request.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&request.body).to_string())
            })
        };
        Recorded {
            method: request.method,
            path: request.target,
            headers: request.headers,
            body,
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Reads one request: the head (request line and headers) and the body, by `Content-Length`
/// or chunked. Bytes the client sent after the head are kept in the body even past the length.
pub async fn read_request(socket: &mut TcpStream) -> std::io::Result<Request> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        read_more(socket, &mut buf, &mut bytes).await?;
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_string()))
        .collect();
    let chunked = header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = bytes[head_end + 4..].to_vec();
    let body = if chunked {
        loop {
            if let Some(decoded) = dechunk(&body) {
                break decoded;
            }
            read_more(socket, &mut buf, &mut body).await?;
        }
    } else {
        while body.len() < length {
            read_more(socket, &mut buf, &mut body).await?;
        }
        body
    };
    Ok(Request {
        method,
        target,
        headers,
        body,
    })
}

/// Appends the next read to `bytes`; the end of the stream is an error, since the request is
/// not complete yet.
async fn read_more(
    socket: &mut TcpStream,
    buf: &mut [u8],
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    let n = socket.read(buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    bytes.extend_from_slice(&buf[..n]);
    Ok(())
}

/// Decodes a complete chunked body, or `None` while it is incomplete.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The boundary a `multipart/*` content type names, without quotes.
pub fn multipart_boundary(content_type: &str) -> Option<&str> {
    content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
}

/// One part of a multipart body.
pub struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// The parts of a multipart body, in order; a part without a head is skipped.
pub fn parse_multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + delimiter.len() <= body.len() {
        if body[i..].starts_with(&delimiter) {
            starts.push(i);
            i += delimiter.len();
        } else {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        let chunk = &body[pair[0] + delimiter.len()..pair[1]];
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let Some(head_end) = chunk.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let mut part = part_head(&String::from_utf8_lossy(&chunk[..head_end]));
        part.bytes = chunk[head_end + 4..].to_vec();
        parts.push(part);
    }
    parts
}

/// A part with the name, file name and content type its head gives, and no bytes yet.
fn part_head(head: &str) -> Part {
    let mut part = Part {
        name: String::new(),
        filename: None,
        content_type: None,
        bytes: Vec::new(),
    };
    for line in head.split("\r\n") {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.eq_ignore_ascii_case("content-type") {
            part.content_type = Some(value.trim().to_string());
        } else if key.eq_ignore_ascii_case("content-disposition") {
            for param in value.split(';').map(str::trim) {
                if let Some(v) = param.strip_prefix("name=") {
                    part.name = v.trim_matches('"').to_string();
                } else if let Some(v) = param.strip_prefix("filename=") {
                    part.filename = Some(v.trim_matches('"').to_string());
                }
            }
        }
    }
    part
}

/// `headers` after a `content-type: {default}` header, unless they name a content type.
pub fn with_content_type(headers: &[(String, String)], default: &str) -> Vec<(String, String)> {
    let mut all = Vec::with_capacity(headers.len() + 1);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        all.push(("content-type".to_string(), default.to_string()));
    }
    all.extend_from_slice(headers);
    all
}

/// Writes a complete answer and closes the connection: the status line, `headers` in order,
/// then `content-length` and `connection: close`, and the body.
pub async fn write_response(
    socket: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body).await?;
    socket.flush().await?;
    socket.shutdown().await
}

/// Writes the head of a 200 answer without a length, so that its body, which the caller then
/// writes and flushes piece by piece, ends when the connection closes.
pub async fn write_stream_head(socket: &mut TcpStream, content_type: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await?;
    socket.flush().await
}

/// The reason phrase of a status line; a status the fakes never use gets a placeholder.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Whatever",
    }
}
