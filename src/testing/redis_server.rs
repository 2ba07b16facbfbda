use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real `redis-server` on a free loopback port, with no persistence, killed on drop.
///
/// Panics with an actionable message when `redis-server` is not installed: tests that need Redis
/// must fail loudly, never skip silently (`scripts/test.sh` installs it).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// With persistence: the directory of its append-only file (kept across restarts).
    data_dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> Self {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            data_dir: None,
        };
        s.spawn();
        s
    }

    /// Starts a server with an append-only file fsynced on every write, so that
    /// [`restart`](Self::restart) (even after a `kill -9`) brings its data back.
    pub fn start_persistent() -> Self {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            data_dir: Some(tempfile::tempdir().expect("a temporary directory for redis")),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        let dir = self
            .data_dir
            .as_ref()
            .map(|d| d.path().to_string_lossy().into_owned());
        match &dir {
            Some(dir) => args.extend([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir,
            ]),
            None => args.extend(["--appendonly", "no"]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it (apt-get install redis-server) or run scripts/test.sh")
            });
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// Kills the server (SIGKILL); [`restart`](Self::restart) brings it back on the same port.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A synchronous connection for assertions.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test redis-server")
    }

    /// Entries read and not yet acknowledged in `group` of `stream` (the `XPENDING` summary).
    pub fn pending(&self, stream: &str, group: &str) -> u64 {
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .query(&mut self.connection())
            .expect("XPENDING");
        match reply {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                other => panic!("unexpected XPENDING reply {other:?}"),
            },
            other => panic!("unexpected XPENDING reply {other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
