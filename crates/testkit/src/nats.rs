//! A NATS server of a test's own, on a free port of 127.0.0.1, that the
//! test kills and starts again (the machine's NATS is shared with other
//! tests and is never stopped).

use std::time::Duration;

/// A private `nats-server` child process (killed when dropped).
pub struct PrivateNats {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
}

impl PrivateNats {
    /// Where Debian installs the server.
    pub const BINARY: &str = "/usr/sbin/nats-server";

    /// Starts one on a free port and waits until it listens; where
    /// `nats-server` is not installed, a failure if `DUOKEY_TEST_NATS_URL`
    /// is set, else `None` with a `SKIPPED:` line.
    pub async fn start() -> Option<PrivateNats> {
        let present = std::path::Path::new(Self::BINARY).exists();
        let install = "install it (apt-get install nats-server)";
        if !crate::tool_or_skip(present, Self::BINARY, "DUOKEY_TEST_NATS_URL", install) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Some(Self::start_on(port).await)
    }

    /// Starts one on `port` (again, after [`PrivateNats::kill`]) and waits
    /// (bounded) until it listens.
    pub async fn start_on(port: u16) -> PrivateNats {
        let child = std::process::Command::new(Self::BINARY)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen on {port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        PrivateNats { port, child }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}
