//! A real S3-compatible server for the tests (moto, started on a loopback port by the test
//! that needs it and killed when dropped), plain HTTP calls the client library has no API
//! for (creating buckets, listing incomplete multipart uploads), and a TCP proxy in front
//! of the server that delays, holds or refuses traffic.
//!
//! Without `moto_server` on the `PATH` the tests print why and pass without running,
//! unless `SNAPSTATE_S3_TESTS=1` says the server is required (as CI does): then they fail.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use state_storage_object::{ObjectCheckpointStorage, ObjectStoreOptions, RetryOptions, Secret};

/// The access key the tests sign with (moto accepts any unless told otherwise).
pub const ACCESS_KEY: &str = "AKIASNAPSTATETESTKEY1";
/// The secret key the tests sign with; tests check it never shows up in messages.
pub const SECRET_KEY: &str = "snapstate-test-secret-never-printed-0123";

/// Whether the S3 tests must run (`SNAPSTATE_S3_TESTS=1`).
fn required() -> bool {
    std::env::var("SNAPSTATE_S3_TESTS").is_ok_and(|value| value == "1")
}

/// A moto server on a loopback port, killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Option<Child>,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding a loopback port")
}

impl MotoServer {
    /// Starts a server, or returns `None` (after printing why) when `moto_server` is not
    /// installed and the tests are not required.
    pub fn start(test: &str) -> Option<MotoServer> {
        Self::start_with(test, &[])
    }

    /// Starts a server with extra environment variables.
    pub fn start_with(test: &str, env: &[(&str, &str)]) -> Option<MotoServer> {
        for _ in 0..5 {
            let port = free_port();
            let spawned = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    assert!(
                        !required(),
                        "{test}: SNAPSTATE_S3_TESTS=1 but `moto_server` is not installed (pip install 'moto[server]')"
                    );
                    println!(
                        "{test}: skipped: `moto_server` is not installed (pip install 'moto[server]'; SNAPSTATE_S3_TESTS=1 makes this a failure)"
                    );
                    return None;
                }
                Err(err) => panic!("{test}: starting moto_server: {err}"),
            };
            // The server says it listens once it has bound its port; a port taken in the
            // meantime makes it exit instead. Its request log is drained until it exits.
            let stderr = child.stderr.take().expect("stderr is piped");
            let (ready, listening) = mpsc::channel();
            std::thread::spawn(move || {
                let mut ready = Some(ready);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("Running on")
                        && let Some(ready) = ready.take()
                    {
                        let _ = ready.send(());
                    }
                }
            });
            match listening.recv_timeout(Duration::from_secs(60)) {
                Ok(()) => {
                    return Some(MotoServer {
                        child: Some(child),
                        port,
                    });
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("{test}: moto_server did not start on any of 5 loopback ports");
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Creates bucket `name`.
    pub fn create_bucket(&self, name: &str) {
        let (status, body) = http(self.port, "PUT", &format!("/{name}"), b"");
        assert_eq!(status, 200, "creating bucket {name}: {body}");
    }

    /// A fresh bucket with a unique name.
    pub fn fresh_bucket(&self, prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_bucket(&name);
        name
    }

    /// Keys of the incomplete multipart uploads in `bucket`.
    pub fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let (status, body) = http(self.port, "GET", &format!("/{bucket}?uploads"), b"");
        assert_eq!(status, 200, "listing uploads of {bucket}: {body}");
        body.split("<Upload>")
            .skip(1)
            .filter_map(|upload| {
                let start = upload.find("<Key>")? + "<Key>".len();
                let end = upload[start..].find("</Key>")? + start;
                Some(upload[start..end].to_owned())
            })
            .collect()
    }

    /// Keys of every object in `bucket`.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let (status, body) = http(self.port, "GET", &format!("/{bucket}?list-type=2"), b"");
        assert_eq!(status, 200, "listing {bucket}: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next().map(str::to_owned))
            .collect()
    }

    /// Panics naming `case` if `bucket` holds an object or an incomplete upload.
    #[track_caller]
    pub fn assert_clean(&self, bucket: &str, case: &str) {
        let objects = self.objects(bucket);
        assert!(objects.is_empty(), "{case}: objects left: {objects:?}");
        let uploads = self.pending_uploads(bucket);
        assert!(
            uploads.is_empty(),
            "{case}: incomplete uploads left: {uploads:?}"
        );
    }

    /// From now on every request must be signed with credentials moto knows (none are):
    /// the server answers 403.
    pub fn enforce_authentication(&self) {
        let (status, body) = http(self.port, "POST", "/moto-api/reset-auth", b"0");
        assert_eq!(status, 200, "enforcing authentication: {body}");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One plain HTTP/1.1 request to the server; the status and body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to moto");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("sending a request");
    stream.write_all(body).expect("sending a body");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("reading a response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// Options for a loopback server: test credentials, retries bounded to a few seconds so
/// tests of a failing server end quickly.
pub fn options(endpoint: &str) -> ObjectStoreOptions {
    ObjectStoreOptions {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        access_key: Some(Secret::new(ACCESS_KEY)),
        secret_key: Some(Secret::new(SECRET_KEY)),
        retry: RetryOptions {
            max_retries: 2,
            timeout: Duration::from_secs(3),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(1),
        ..ObjectStoreOptions::default()
    }
}

/// Storage at `s3://bucket/prefix` on `endpoint`.
pub fn storage(endpoint: &str, bucket: &str, prefix: &str) -> ObjectCheckpointStorage {
    ObjectCheckpointStorage::open(&format!("s3://{bucket}/{prefix}"), options(endpoint))
        .unwrap_or_else(|err| panic!("opening s3://{bucket}/{prefix}: {err}"))
}

/// Bytes `0..len` of a fixed pseudo-random sequence.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Forwards requests; waits this long before forwarding each piece of a response.
    Delay(Duration),
    /// Forwards requests; holds responses until the mode changes.
    Hold,
    /// Closes new connections at once and cuts open ones.
    Refuse,
    /// Closes the next this many new connections at once, then passes.
    RefuseNext(u32),
}

#[derive(Debug)]
struct ProxyState {
    mode: Mode,
    /// Responses held so far (in [`Mode::Hold`]).
    held: u64,
    /// Connections refused by [`Mode::RefuseNext`].
    refused: u32,
    stopped: bool,
    connections: Vec<TcpStream>,
}

/// A TCP proxy on a loopback port in front of `target`.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: Arc<(Mutex<ProxyState>, Condvar)>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:target`, passing traffic.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new((
            Mutex::new(ProxyState {
                mode: Mode::Pass,
                held: 0,
                refused: 0,
                stopped: false,
                connections: Vec::new(),
            }),
            Condvar::new(),
        ));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (lock, _) = &*shared;
                let mut guard = lock.lock().expect("proxy state");
                if guard.stopped {
                    return;
                }
                match guard.mode {
                    Mode::Refuse => {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    Mode::RefuseNext(n) if n > 0 => {
                        guard.mode = Mode::RefuseNext(n - 1);
                        guard.refused += 1;
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    _ => {}
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for stream in [&client, &server] {
                    if let Ok(clone) = stream.try_clone() {
                        guard.connections.push(clone);
                    }
                }
                drop(guard);
                let (Ok(client_in), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let upstream = shared.clone();
                std::thread::spawn(move || pump(client_in, server_out, None));
                std::thread::spawn(move || pump(server, client, Some(upstream)));
            }
        });
        Proxy { port, state }
    }

    /// The proxy's endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the mode; [`Mode::Refuse`] also cuts every open connection.
    pub fn set_mode(&self, mode: Mode) {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().expect("proxy state");
        state.mode = mode;
        if mode == Mode::Refuse {
            for connection in state.connections.drain(..) {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
        changed.notify_all();
    }

    /// Connections refused by [`Mode::RefuseNext`] so far.
    pub fn refused(&self) -> u32 {
        self.state.0.lock().expect("proxy state").refused
    }

    /// Blocks until the proxy holds at least one response (in [`Mode::Hold`]).
    pub fn wait_until_holding(&self) {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().expect("proxy state");
        while state.held == 0 {
            state = changed.wait(state).expect("proxy state");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().expect("proxy state");
        state.stopped = true;
        state.mode = Mode::Refuse;
        for connection in state.connections.drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
        changed.notify_all();
        drop(state);
        // Wakes the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`; responses (`state` given) obey the proxy's mode.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Option<Arc<(Mutex<ProxyState>, Condvar)>>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(state) = &state {
            let (lock, changed) = &**state;
            let mut guard = lock.lock().expect("proxy state");
            let mut counted = false;
            loop {
                match guard.mode {
                    Mode::Pass | Mode::RefuseNext(_) => break,
                    Mode::Refuse => {
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                    Mode::Hold => {
                        if !counted {
                            guard.held += 1;
                            counted = true;
                            changed.notify_all();
                        }
                        guard = changed.wait(guard).expect("proxy state");
                    }
                    Mode::Delay(delay) => {
                        // A slow network: the wait ends early only if the mode changes.
                        let (next, timeout) =
                            changed.wait_timeout(guard, delay).expect("proxy state");
                        guard = next;
                        if timeout.timed_out() {
                            break;
                        }
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
