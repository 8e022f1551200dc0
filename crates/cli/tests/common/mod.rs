//! Test harness: real `slipstream server` processes on free ports with their own state dirs,
//! users made with the real `slipstream user` command, and API clients for them.
#![allow(dead_code)]

use serde_json::Value;
use slipstream_client::{ApiClient, Auth, ClientError, Trust};
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slipstream"))
}

/// A TCP port that was free a moment ago (also free for UDP, so it can serve as the recv port).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a free TCP port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `slipstream user ...` on a state dir, feeding `stdin`.
pub fn user_command(state_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(binary())
        .arg("user")
        .args(args)
        .arg("--persistent-state-dir")
        .arg(state_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run slipstream user");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("slipstream user finishes")
}

/// Adds a user with `slipstream user add NAME --password-stdin`.
pub fn add_user(state_dir: &Path, name: &str, password: &str, superuser: bool) {
    let mut args = vec!["add", name, "--password-stdin"];
    if superuser {
        args.push("--superuser");
    }
    let output = user_command(state_dir, &args, &format!("{password}\n"));
    assert!(
        output.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// True if `getServerInfo` answers. Runs on its own thread and runtime, so that it works
/// from synchronous code and from inside async tests alike.
fn answers(client: ApiClient) -> bool {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| {
                runtime
                    .block_on(client.call("server.getServerInfo", Value::Null))
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .join()
    .unwrap_or(false)
}

/// A running server process; stopped with SIGTERM when dropped.
pub struct TestServer {
    pub state_dir: PathBuf,
    pub api_port: u16,
    pub recv_port: u16,
    pub log_file: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with a new state dir and `extra_args`.
    pub fn start(extra_args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let state_dir = temp.path().join("state");
        let mut server = TestServer {
            log_file: temp.path().join("server.log"),
            state_dir,
            api_port: free_port(),
            recv_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            _temp: Some(temp),
        };
        server.launch();
        server
    }

    /// Starts the process (again) with the same state dir and ports, and waits until it answers.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .expect("open the server log");
        let child = Command::new(binary())
            .arg("server")
            .arg("--api-host=127.0.0.1")
            .arg(format!("--api-port={}", self.api_port))
            .arg(format!("--recv-port={}", self.recv_port))
            .arg("--persistent-state-dir")
            .arg(&self.state_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slipstream server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("server exited with {status}; log:\n{}", self.log());
            }
            if answers(self.client(Trust::Insecure)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not answer within 30 s; log:\n{}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// A client with no credentials.
    pub fn client(&self, trust: Trust) -> ApiClient {
        ApiClient::new("127.0.0.1", self.api_port, trust).with_timeout(Duration::from_secs(60))
    }

    /// A client logged in with HTTP Basic.
    pub fn basic(&self, user: &str, password: &str) -> ApiClient {
        self.client(Trust::Insecure).with_auth(Auth::Basic {
            user: user.into(),
            password: password.into(),
        })
    }

    /// Sends SIGTERM and waits for the process; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY-free: kill(2) through the libc-free std API is not available for SIGTERM,
        // so use the `kill` command.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Kills the process with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The JSON-RPC error of a failed call (panics if the call succeeded or failed otherwise).
pub fn rpc_error(result: Result<Value, ClientError>) -> slipstream_client::RpcError {
    match result {
        Err(ClientError::Rpc(error)) => error,
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// The real S3 server and proxy that `scripts/test-services.sh env` describes.
pub struct S3Env {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the real S3 server. Run \
             scripts/test-services.sh start && eval \"$(scripts/test-services.sh env)\" \
             (scripts/test.sh does both)"
        )
    })
}

impl S3Env {
    pub fn from_env() -> S3Env {
        S3Env {
            endpoint: env_var("SLIPSTREAM_TEST_S3_ENDPOINT"),
            access_key: env_var("SLIPSTREAM_TEST_S3_ACCESS_KEY"),
            secret_key: env_var("SLIPSTREAM_TEST_S3_SECRET_KEY"),
        }
    }

    /// An S3 sandbox config (JSON, as users send it) for `bucket` under `path`.
    pub fn sandbox(&self, bucket: &str, path: &str) -> Value {
        serde_json::json!({
            "type": "S3",
            "bucketName": bucket,
            "path": path,
            "endpointOverride": self.endpoint,
            "accessKeyId": self.access_key,
            "secretKey": self.secret_key,
        })
    }

    /// A raw SDK client, for planting objects and checking results behind Slipstream's back.
    pub fn raw_client(&self) -> aws_sdk_s3::Client {
        let mut config = slipstream_storage::config::S3Config::new("unused");
        config.endpoint_override = Some(self.endpoint.clone());
        config.access_key_id = Some(self.access_key.clone());
        config.secret_key = Some(slipstream_storage::config::Secret(self.secret_key.clone()));
        slipstream_s3::client(&config).expect("raw S3 client")
    }

    /// Creates a bucket with a name unique to this test run.
    pub async fn new_bucket(&self, hint: &str) -> String {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("cli-{hint}-{}-{n}", std::process::id());
        self.raw_client()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create a test bucket");
        name
    }
}

/// A server with its own File sandbox folder (`--sandbox-dir`), for transfer tests.
pub struct Site {
    pub server: TestServer,
    pub sandbox: tempfile::TempDir,
}

impl Site {
    /// Starts a server whose users all share one new sandbox folder.
    pub fn start(extra_args: &[&str]) -> Site {
        let sandbox = tempfile::tempdir().expect("sandbox dir");
        let flag = format!("--sandbox-dir={}", sandbox.path().display());
        let mut args = vec![flag.as_str()];
        args.extend_from_slice(extra_args);
        Site {
            server: TestServer::start(&args),
            sandbox,
        }
    }

    /// A path inside the sandbox folder.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.sandbox.path().join(relative)
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the transfer is `complete`, `error` or `cancelled` and returns it.
pub async fn wait_transfer_end(
    client: &ApiClient,
    transfer_id: &Value,
    timeout: Duration,
) -> Value {
    wait_until("the transfer to end", timeout, || async {
        let transfer = client
            .call(
                "send.getTransfer",
                serde_json::json!({"transferId": transfer_id}),
            )
            .await
            .expect("getTransfer");
        matches!(
            transfer["status"].as_str(),
            Some("complete" | "error" | "cancelled")
        )
        .then_some(transfer)
    })
    .await
}

impl TestServer {
    /// Starts a server like [`TestServer::start`], but run through `prlimit` so that its
    /// open-file limit is `nofile`, soft and hard (the server raises its soft limit to the hard
    /// one at start, so both must be low). A later [`TestServer::launch`] runs it without.
    pub fn start_with_nofile(nofile: u64, extra_args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer {
            log_file: temp.path().join("server.log"),
            state_dir: temp.path().join("state"),
            api_port: free_port(),
            recv_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            _temp: Some(temp),
        };
        let log = std::fs::File::create(&server.log_file).expect("create the server log");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(binary())
            .arg("server")
            .arg("--api-host=127.0.0.1")
            .arg(format!("--api-port={}", server.api_port))
            .arg(format!("--recv-port={}", server.recv_port))
            .arg("--persistent-state-dir")
            .arg(&server.state_dir)
            .args(&server.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slipstream server through prlimit (util-linux)");
        server.child = Some(child);
        server.wait_ready();
        server
    }

    /// The process's open-file limit (soft, hard), from `/proc/PID/limits`.
    pub fn nofile_limit(&self) -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid()?)).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut numbers = line
            .split_whitespace()
            .filter_map(|word| word.parse::<u64>().ok());
        Some((numbers.next()?, numbers.next()?))
    }
}

impl Site {
    /// Starts a server with its own sandbox folder like [`Site::start`], with an open-file
    /// limit of `nofile` (see [`TestServer::start_with_nofile`]).
    pub fn start_with_nofile(nofile: u64, extra_args: &[&str]) -> Site {
        let sandbox = tempfile::tempdir().expect("sandbox dir");
        let flag = format!("--sandbox-dir={}", sandbox.path().display());
        let mut args = vec![flag.as_str()];
        args.extend_from_slice(extra_args);
        Site {
            server: TestServer::start_with_nofile(nofile, &args),
            sandbox,
        }
    }
}
