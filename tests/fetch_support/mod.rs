//! A tiny HTTP/1.1 test server on 127.0.0.1 for the fetch tests (std only, one thread per
//! connection, `Connection: close` on every response).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How one path is served.
#[derive(Clone, Default)]
pub struct Route {
    pub body: Vec<u8>,
    /// Honour `Range: bytes=N-` with 206.
    pub ranges: bool,
    /// On the first response only: send this many body bytes, then close the connection.
    pub drop_after: Option<usize>,
    /// On the first response only: send this many body bytes, then stall this long.
    pub stall_after: Option<(usize, Duration)>,
    /// Statuses answered (with an empty body) before the body is served.
    pub statuses: VecDeque<u16>,
    /// Pause between 16 KiB chunks.
    pub chunk_delay: Option<Duration>,
}

impl Route {
    pub fn new(body: Vec<u8>) -> Route {
        Route {
            body,
            ..Route::default()
        }
    }
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    /// Start offset of a `Range: bytes=N-` header.
    pub range: Option<u64>,
}

struct State {
    routes: HashMap<String, Route>,
    log: Vec<Logged>,
}

/// A running server (the listener thread lives until the test process ends).
#[derive(Clone)]
pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            routes: HashMap::new(),
            log: Vec::new(),
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        Server { base, state }
    }

    /// Serve `route` at `path` (e.g. `/a.bin`).
    pub fn add(&self, path: &str, route: Route) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), route);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> Vec<Logged> {
        let st = self.state.lock().unwrap();
        st.log.iter().filter(|l| l.path == path).cloned().collect()
    }

    /// All requests received.
    pub fn all_requests(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }
}

fn handle(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = v
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse::<u64>().ok());
            }
        }
    }
    // Decide the answer under the lock, then write without holding it.
    let (route, status_only, drop_after, stall_after) = {
        let mut st = state.lock().unwrap();
        st.log.push(Logged {
            path: path.clone(),
            range,
        });
        match st.routes.get_mut(&path) {
            None => (None, Some(404), None, None),
            Some(r) => {
                if let Some(s) = r.statuses.pop_front() {
                    (None, Some(s), None, None)
                } else {
                    let d = r.drop_after.take();
                    let s = r.stall_after.take();
                    (Some(r.clone()), None, d, s)
                }
            }
        }
    };
    let mut out = conn;
    if let Some(status) = status_only {
        write!(
            out,
            "HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return out.flush();
    }
    let route = route.unwrap();
    let total = route.body.len() as u64;
    let start = match range {
        Some(n) if route.ranges && n < total => n,
        _ => 0,
    };
    let body = &route.body[start as usize..];
    if start > 0 {
        write!(
            out,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            total - 1,
            body.len()
        )?;
    } else {
        let accept = if route.ranges {
            "Accept-Ranges: bytes\r\n"
        } else {
            ""
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\n{accept}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
    }
    if let Some(n) = drop_after {
        out.write_all(&body[..n.min(body.len())])?;
        out.flush()?;
        return out.shutdown(Shutdown::Both);
    }
    let mut sent = 0;
    let stall = stall_after;
    for chunk in body.chunks(16 * 1024) {
        if let Some((n, d)) = stall {
            if sent + chunk.len() > n {
                out.write_all(&body[sent..n])?;
                out.flush()?;
                std::thread::sleep(d);
                return out.shutdown(Shutdown::Both);
            }
        }
        out.write_all(chunk)?;
        out.flush()?;
        sent += chunk.len();
        if let Some(d) = route.chunk_delay {
            std::thread::sleep(d);
        }
    }
    out.flush()
}

/// Deterministic pseudo-random test content.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Files directly in `dir` (names only), sorted.
pub fn list(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
