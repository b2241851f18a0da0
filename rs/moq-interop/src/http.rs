//! A small blocking HTTP/1.1 client over `std::net::TcpStream`: one request per connection
//! (`Connection: close`), plain `http://` only, with a deadline for the whole exchange.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A request to send: method, `http://host:port/path` URL, extra headers, deadline.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// A response: status code, headers in order, body (decoded from chunks if chunked).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// `GET url` with the default 5 s deadline.
pub fn get(url: &str) -> io::Result<Response> {
    Request::get(url).send()
}

/// The body of `GET url` when it answers 2xx, else empty (like `curl -sf`).
pub fn text(url: &str) -> String {
    get(url).ok().filter(Response::is_success).map(|r| r.body).unwrap_or_default()
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = body.to_string().into_bytes();
        self.header("Content-Type", "application/json")
    }

    /// `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// The deadline for connecting, sending and reading the whole response (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn send(&self) -> io::Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let (authority, path) = split_url(&self.url)?;
        let stream = connect(authority, self.timeout)?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut head = format!("{} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n", self.method);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        (&stream).write_all(head.as_bytes())?;
        (&stream).write_all(&self.body)?;
        let mut reader = BufReader::new(Deadline { stream, deadline });
        read_response(&mut reader, self.method == "HEAD")
    }
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl fmt::Display for Response {
    /// Status, headers and body, like `curl -i` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        write!(f, "\n{}", self.body)
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// `http://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| invalid(format!("not an http:// URL: {url}")))?;
    Ok(match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    })
}

/// Connects to `host:port` (`[v6]:port` too; port 80 if absent), trying every address in turn.
fn connect(authority: &str, timeout: Duration) -> io::Result<TcpStream> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            (host, port.parse().map_err(|_| invalid(format!("bad port in {authority}")))?)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = invalid(format!("{authority} resolves to no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A stream whose reads fail once `deadline` has passed.
struct Deadline {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "HTTP response not complete in time"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_response(reader: &mut impl BufRead, head_only: bool) -> io::Result<Response> {
    let status_line = read_line(reader)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("bad header {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut response = Response { status, headers, body: String::new() };
    let mut body = Vec::new();
    let chunked = response.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        loop {
            let size = read_line(reader)?;
            let size = size.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(length) = response.header("content-length") {
        let length = length.parse().map_err(|_| invalid(format!("bad content-length {length:?}")))?;
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server: answers the first request with `reply`, returns what it received.
    fn serve(reply: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            while !request.ends_with("\r\n\r\n") {
                if reader.read_line(&mut request).unwrap() == 0 {
                    break;
                }
            }
            (&stream).write_all(reply).unwrap();
            request
        });
        (url, server)
    }

    #[test]
    fn content_length_bodies_and_request_headers() {
        let (url, server) =
            serve(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello and more");
        let reply = Request::get(&format!("{url}/metrics")).bearer("t0k").header("Origin", "https://x").send().unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "hello"));
        assert_eq!(reply.header("content-type"), Some("text/plain"));
        assert!(reply.is_success());
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /metrics HTTP/1.1\r\n"), "{request}");
        for line in
            ["Connection: close\r\n", "Authorization: Bearer t0k\r\n", "Origin: https://x\r\n", "Host: 127.0.0.1:"]
        {
            assert!(request.contains(line), "{request}");
        }
    }

    #[test]
    fn chunked_bodies() {
        let (url, _server) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n",
        );
        assert_eq!(get(&url).unwrap().body, "Wikipedia in \r\n\r\nchunks.");
    }

    #[test]
    fn bodies_up_to_the_close_and_error_statuses() {
        let (url, _server) = serve(b"HTTP/1.0 401 Unauthorized\r\n\r\nno token");
        let reply = get(&url).unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (401, "no token"));
        assert!(!reply.is_success());
        let (url, _server) = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnah");
        assert_eq!(text(&url), "", "text() is empty unless 2xx");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let started = Instant::now();
        let err = Request::get(&url).timeout(Duration::from_millis(300)).send().unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
    }

    #[test]
    fn urls() {
        assert_eq!(split_url("http://[::1]:4443/certificate.sha256").unwrap(), ("[::1]:4443", "/certificate.sha256"));
        assert_eq!(split_url("http://127.0.0.1:9").unwrap(), ("127.0.0.1:9", "/"));
        assert!(split_url("https://localhost/").is_err());
        assert!(get("http://127.0.0.1:1/").is_err(), "nothing listens on port 1");
    }
}
