//! A loopback HTTP server for the unit tests of the GCS backend (the lib's tests cannot use
//! `tests/support`): it takes one connection at a time, records the request, answers it as its
//! script says and closes the connection, on a thread of its own and the real clock.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Config, GcsStore};
use crate::client::{Options, RetryConfig};

/// One request as received.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub method: String,
    /// The path and query.
    pub target: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub(super) enum Act {
    /// Answers with this status, these headers and this body.
    Answer(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Answers with the head announcing the whole body but sends only its first `sent` bytes,
    /// then hangs up.
    Cut {
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        sent: usize,
    },
    /// Hangs up without an answer, having read the whole request.
    HangUp,
}

pub(super) struct Fake {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Fake {
    /// Serves every request with `script`, which is given the request and the server's URL.
    pub(super) fn start(mut script: impl FnMut(&Request, &str) -> Act + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (seen, base) = (requests.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let reply = script(&request, &base);
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(request);
                write_reply(stream, reply);
            }
        });
        Self { url, requests }
    }

    /// The requests received so far, in order.
    pub(super) fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A store of the bucket `bucket` on this server: no per-attempt timers (the tests run on
    /// a paused clock), at most 3 retries.
    pub(super) fn store(&self) -> GcsStore {
        let options = Options {
            retry: RetryConfig {
                max_retries: Some(3),
                deadline: None,
                ..RetryConfig::default()
            },
            ..Options::default()
        }
        .without_timers();
        GcsStore::open("bucket", Config::emulator(&self.url, options)).unwrap()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let len = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; len];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

fn write_reply(mut stream: TcpStream, reply: Act) {
    let (status, headers, body, sent) = match reply {
        Act::Answer(status, headers, body) => {
            let sent = body.len();
            (status, headers, body, sent)
        }
        Act::Cut {
            headers,
            body,
            sent,
        } => (200, headers, body, sent),
        Act::HangUp => return,
    };
    let mut head = format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body[..sent]);
    let _ = stream.flush();
}
