//! Shared harness for the process-level tests: start the real `skald` binary on free loopback
//! ports with its own temporary data directory, wait until it is ready, stop / kill / restart it.
//!
//! Every test builds its own [`TestServer`], so nextest can run the test binaries in parallel.
//! Nothing here sleeps to synchronise: everything polls with a deadline ([`poll_until`]).
//!
//! Each test crate uses only part of this module, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod checker;
pub mod clients;
pub mod cluster;
pub mod load;
pub mod netns;
pub mod netsplit;
pub mod rdk;
pub mod replica;
pub mod tmpfs;
pub mod wire;
pub mod workload;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to become ready (storage recovery included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times to try fresh ports when a port picked as free turns out to be taken.
pub(crate) const PORT_ATTEMPTS: u32 = 3;
/// How much of the server's stderr to print when a test fails.
const STDERR_TAIL_BYTES: u64 = 16 * 1024;

/// Polls `probe` until it returns `Some`, or panics naming `what` once `timeout` has passed.
/// Polls quickly at first, then backs off to at most 100 ms between tries.
pub fn poll_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The lowest port [`free_port`] hands out.
const TEST_PORTS_LOW: u16 = 10_000;

/// A loopback port for a test server, free now and reserved for the rest of this test process.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`, 32768–60999 by
/// default), so no client's outgoing connection can take one in the time between choosing it
/// and the server binding it: a cluster test starts its last node many seconds after choosing
/// its ports, and the whole suite opens thousands of connections meanwhile. A lock file per
/// port, held until this process exits, keeps concurrently running tests (and restarts within
/// one test) from being handed the same port. If the ephemeral range leaves too little room
/// below it, this falls back to a port the kernel picks.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<File>> = std::sync::Mutex::new(Vec::new());
    let high = ephemeral_low().saturating_sub(1);
    if high < TEST_PORTS_LOW + 1_000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        return listener.local_addr().expect("local_addr").port();
    }
    let locks = std::env::temp_dir().join("skald-test-ports");
    std::fs::create_dir_all(&locks).expect("create the port lock directory");
    let span = u32::from(high - TEST_PORTS_LOW) + 1;
    // Start somewhere different in each process so concurrent tests rarely probe the same ports.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (std::process::id().wrapping_mul(7_919) ^ nanos) % span;
    for step in 0..span {
        let port = TEST_PORTS_LOW + ((start + step) % span) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(locks.join(port.to_string()))
            .expect("open a port lock file");
        if lock.try_lock().is_err() {
            continue;
        }
        // Held by something outside the tests (or a server of this test still running)?
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.lock().expect("port locks").push(lock);
        return port;
    }
    panic!("no free port in {TEST_PORTS_LOW}..={high}");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Runs the tool, `skald ARGS --brokers BOOTSTRAP`: its exit status, stdout and stderr.
pub fn run_skald(
    bootstrap: &str,
    args: &[&str],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut command = Command::new(skald_bin());
    command
        .args(args)
        .arg("--brokers")
        .arg(bootstrap)
        .env_remove("SKALD_BROKERS")
        .env("RUST_LOG", "warn");
    run_with_timeout(command, b"", timeout)
}

/// [`run_skald`], which must succeed; its stdout.
pub fn skald_ok(bootstrap: &str, args: &[&str], timeout: Duration) -> String {
    let (status, stdout, stderr) = run_skald(bootstrap, args, timeout);
    assert!(
        status.success(),
        "skald {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Path of the `skald` binary Cargo built for these tests.
pub fn skald_bin() -> &'static str {
    env!("CARGO_BIN_EXE_skald")
}

/// One `skald server` process with its own ports and data directory.
pub struct TestServer {
    /// Owns the data directory and the captured stderr; kept across restarts.
    dir: tempfile::TempDir,
    kafka_port: u16,
    metrics_port: u16,
    overrides: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestServer {
    /// Starts a server with the defaults (1 partition per auto-created topic).
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts a server with extra `--override key=value` properties.
    pub fn start_with(overrides: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("skald-test-")
            // SKALD_TEST_KEEP=1 keeps the data and stderr for a post-mortem.
            .disable_cleanup(std::env::var_os("SKALD_TEST_KEEP").is_some())
            .tempdir()
            .expect("create temp dir");
        let mut server = TestServer {
            dir,
            kafka_port: free_port(),
            metrics_port: free_port(),
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        // A port found free can be taken by someone else before the server binds it (another
        // test's server, or a client's ephemeral port): then try again on fresh ports.
        for attempt in 1..=PORT_ATTEMPTS {
            match server.spawn() {
                Ok(()) => return server,
                Err(reason) if attempt < PORT_ATTEMPTS && reason.contains("in use") => {
                    server.kafka_port = free_port();
                    server.metrics_port = free_port();
                }
                Err(reason) => panic!("{reason}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `127.0.0.1:PORT` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_port))
    }

    /// `http://127.0.0.1:PORT/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }

    /// The `log.dirs` directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file the server's stderr goes to (appended across restarts).
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("server.stderr")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// The last few KiB of the server's stderr.
    pub fn stderr_tail(&self) -> String {
        read_tail(&self.stderr_path(), STDERR_TAIL_BYTES)
    }

    /// Spawns the server and waits until it is ready. Err = it exited first (with its stderr).
    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "server already running");
        std::fs::create_dir_all(self.data_dir()).expect("create data dir");
        let mut stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open stderr file");
        writeln!(stderr, "==== harness: starting skald server ====").expect("write stderr file");
        let mut command = Command::new(skald_bin());
        command
            .arg("server")
            .arg("--override")
            .arg(format!(
                "listeners=PLAINTEXT://127.0.0.1:{}",
                self.kafka_port
            ))
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir().display()))
            .arg("--override")
            .arg(format!("metrics.listener=127.0.0.1:{}", self.metrics_port))
            .arg("--override")
            .arg("node.id=1");
        for (key, value) in &self.overrides {
            command.arg("--override").arg(format!("{key}={value}"));
        }
        command
            .env(
                "RUST_LOG",
                std::env::var("SKALD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone stderr file"))
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", skald_bin()));
        self.child = Some(child);
        self.wait_ready()
    }

    /// Ready = the Kafka port accepts a connection (it is bound only after storage recovery).
    fn wait_ready(&mut self) -> Result<(), String> {
        let (addr, stderr) = (self.kafka_addr(), self.stderr_path());
        match wait_until_serving(&mut self.child, addr, "skald server", &stderr) {
            Err(reason) if reason.contains("not ready") => panic!("{reason}"),
            other => other,
        }
    }

    /// SIGTERM, then wait for the exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(
            status.success(),
            "kill -TERM {} failed: {status}",
            child.id()
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "skald server did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- server stderr ---\n{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and assert a clean exit (code 0).
    pub fn stop_clean(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "skald server exited with {status} after SIGTERM\n--- server stderr ---\n{}",
            self.stderr_tail()
        );
    }

    /// Waits for the server to exit by itself; returns the exit status.
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        poll_until("the server's own exit", STOP_TIMEOUT, || {
            child.try_wait().expect("try_wait")
        })
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is not running");
        child.kill().expect("SIGKILL server");
        child.wait().expect("wait for killed server");
    }

    /// Starts the server again on the same ports and data directory. Stops it first
    /// (SIGTERM, clean exit asserted) if it is still running.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop_clean();
        }
        if let Err(reason) = self.spawn() {
            panic!("restart: {reason}");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- skald server stderr ({}), last {} bytes ---\n{}",
                self.stderr_path().display(),
                STDERR_TAIL_BYTES,
                self.stderr_tail()
            );
        }
    }
}

/// Polls until `addr` accepts a connection. Err (with the process's stderr) if the process exits
/// first (`child` is then cleared) or is not serving within [`READY_TIMEOUT`].
pub(crate) fn wait_until_serving(
    child: &mut Option<Child>,
    addr: SocketAddr,
    what: &str,
    stderr: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
            *child = None;
            return Err(format!(
                "{what} exited with {status} before becoming ready\n--- stderr ---\n{}",
                read_tail(stderr, STDERR_TAIL_BYTES)
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} not ready on {addr} after {READY_TIMEOUT:?}\n--- stderr ---\n{}",
                read_tail(stderr, STDERR_TAIL_BYTES)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no stderr file at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The value of one series (its name and labels exactly as the exposition writes them, e.g.
/// `skald_log_end_offset{partition="0",topic="t"}`) on the metrics endpoint at `addr`; `None`
/// if it does not answer 200 or exports no such series.
pub fn metric_sample(addr: SocketAddr, series: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").ok()?;
    (status == 200).then_some(())?;
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The segment files (`*.log`) of a partition directory, in offset order.
pub fn segment_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    segments.sort();
    segments
}

/// `GET path` over HTTP/1.0 with a deadline; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in response: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    Ok((status, body.to_string()))
}

/// Runs a command to completion with a deadline, feeding `stdin`; kills it on timeout.
/// Returns (exit status, stdout, stderr).
pub fn run_with_timeout(
    mut command: Command,
    stdin: &[u8],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
    let mut child_stdin = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that exits early closes the pipe; that is its exit status's business.
        let _ = child_stdin.write_all(&input);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout =
                String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
            let stderr =
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            panic!("{description} did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    (status, stdout, stderr)
}

/// A printed table as rows of whitespace-separated cells (column padding is presentation).
pub fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|row| !row.is_empty())
        .collect()
}

/// One expected table row.
pub fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}
