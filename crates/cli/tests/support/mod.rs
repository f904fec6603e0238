//! The real `duokey-server dev` and `duokey` binaries in a temporary directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn bin(name: &str) -> PathBuf {
    let duokey = PathBuf::from(env!("CARGO_BIN_EXE_duokey"));
    let p = duokey.with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` (or `cargo test --workspace`)",
        p.display()
    );
    p
}

/// The `duokey` binary on the profile in `home` (the environment as inherited).
pub fn duokey_at(home: &Path) -> Command {
    let mut cmd = Command::new(bin("duokey"));
    cmd.arg("--home").arg(home);
    cmd
}

/// Runs `duokey-server ARGS` outside any server directory.
pub fn server_command(args: &[&str]) -> Output {
    Command::new(bin("duokey-server"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that a command exited 0, showing its standard error otherwise.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The arguments of `duokey init` for `user` with `token` and the client.toml at `config`.
pub fn init_args<'a>(user: &'a str, token: &'a str, config: &'a Path) -> [&'a str; 7] {
    [
        "init",
        "--user",
        user,
        "--token",
        token,
        "--config",
        config.to_str().unwrap(),
    ]
}

pub struct Server {
    pub dir: tempfile::TempDir,
    child: Child,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (child, stdout) = Self::spawn(dir.path(), "127.0.0.1:0", "127.0.0.1:0");
        Server {
            dir,
            child,
            _stdout: stdout,
        }
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `duokey-server ARGS --dir DATA` (an administrator's command on
    /// this server's data).
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("duokey-server"))
            .args(args)
            .arg("--dir")
            .arg(self.dir.path().join("srv"))
            .output()
            .unwrap()
    }

    /// Stops the server as an operator or systemd does (SIGTERM) and waits
    /// for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        self.child.wait().unwrap()
    }

    /// Starts the server again on the same data and the same ports.
    pub fn restart(&mut self) {
        self.stop();
        let client = std::fs::read_to_string(self.client_toml()).unwrap();
        let addr = |key: &str| {
            let line = client.lines().find(|l| l.starts_with(key)).unwrap();
            line.split("https://")
                .nth(1)
                .unwrap()
                .trim_end_matches('"')
                .to_owned()
        };
        let (gms, cs) = (addr("gms_url"), addr("cs_url"));
        let (child, stdout) = Self::spawn(self.dir.path(), &gms, &cs);
        self.child = child;
        self._stdout = stdout;
    }

    /// The servers' log (their standard error, every start appended), kept
    /// beside their data so that the P2 scan covers it.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("srv/server.log")
    }

    fn spawn(dir: &Path, gms: &str, cs: &str) -> (Child, BufReader<std::process::ChildStdout>) {
        std::fs::create_dir_all(dir.join("srv")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("srv/server.log"))
            .unwrap();
        let mut child = Command::new(bin("duokey-server"))
            .arg("dev")
            .arg("--dir")
            .arg(dir.join("srv"))
            .args(["--gms-addr", gms, "--cs-addr", cs])
            .env(
                "RUST_LOG",
                "info,duokey_server=debug,duokey_gms=debug,duokey_cs=debug,duokey_accounts=debug",
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("Duokey server"), "{line}");
        // client.toml is written right after this line; wait for its last byte.
        let client = dir.join("srv/client.toml");
        for _ in 0..200 {
            if std::fs::read_to_string(&client).is_ok_and(|t| t.contains("END CERTIFICATE")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        (child, stdout)
    }

    pub fn token(&self, user: &str) -> String {
        let out = Command::new(bin("duokey-server"))
            .args(["enroll", "--dir"])
            .arg(self.dir.path().join("srv"))
            .arg(user)
            .output()
            .unwrap();
        assert_success(&out);
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned()
    }

    pub fn client_toml(&self) -> PathBuf {
        self.dir.path().join("srv/client.toml")
    }

    /// Enrols `user` with a `duokey init` of its own home.
    pub fn user(&self, name: &str) -> User {
        self.enrol(name, &[])
    }

    /// Enrols `user` with `duokey init --no-passphrase`.
    pub fn user_without_passphrase(&self, name: &str) -> User {
        self.enrol(name, &["--no-passphrase"])
    }

    /// A user with no profile yet, at `dir` below the server's directory.
    pub fn newcomer(&self, dir: &str, passphrase: &str) -> User {
        User {
            home: self.dir.path().join(dir),
            passphrase: passphrase.to_owned(),
        }
    }

    fn enrol(&self, name: &str, extra: &[&str]) -> User {
        let u = self.newcomer(name, &format!("{name}'s long passphrase"));
        let token = self.token(name);
        let config = self.client_toml();
        let mut args = init_args(name, &token, &config).to_vec();
        args.extend_from_slice(extra);
        let out = u.run(&args);
        assert!(
            out.status.success(),
            "init {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        u
    }
}

pub struct User {
    pub home: PathBuf,
    pub passphrase: String,
}

impl User {
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &self.passphrase)
    }

    pub fn run_with(&self, args: &[&str], passphrase: &str) -> Output {
        self.command_with(args, passphrase)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `duokey ARGS` on this profile with its passphrase and no key log.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(args, &self.passphrase)
    }

    /// [`User::command`] with `passphrase`.
    fn command_with(&self, args: &[&str], passphrase: &str) -> Command {
        let mut cmd = duokey_at(&self.home);
        cmd.args(args)
            .env("DUOKEY_PASSPHRASE", passphrase)
            .env_remove("DUOKEY_KEYLOG");
        cmd
    }

    /// Runs a command with `input` on its standard input.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that the crash-injection point `point` kills (a
    /// debug build aborts there, as `kill -9` would; PROTOCOL §5.3).
    pub fn killed_at(&self, point: &str, args: &[&str]) {
        use std::os::unix::process::ExitStatusExt;
        let out = self
            .command(args)
            .env("DUOKEY_FAILPOINT", point)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(6),
            "duokey {args:?} should have been killed at {point}: {out:?}"
        );
    }

    /// Starts `duokey --json read GROUP --follow`.
    pub fn follow(&self, group: &str) -> Follow {
        let mut child = self
            .command(&["--json", "read", group, "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Follow {
            lines: lines_of(child.stdout.take().unwrap()),
            errors: lines_of(child.stderr.take().unwrap()),
            child,
            seen: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "duokey {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "duokey {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Runs `duokey --json ARGS`, which must succeed; its output as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// `read --json` messages as (sender, text).
    pub fn messages(&self, group: &str) -> Vec<(String, String)> {
        self.ok(&["--json", "read", group])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("text").is_some())
            .map(|v| {
                (
                    v["sender"].as_str().unwrap().to_owned(),
                    v["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    pub fn texts(&self, group: &str) -> Vec<String> {
        self.messages(group).into_iter().map(|(_, t)| t).collect()
    }
}

/// Creates `name` as `owner` and brings every other user in.
pub fn group_with(owner: &User, name: &str, others: &[&User]) -> String {
    let v = owner.json(&["group", "create", name]);
    let gid = v["group_id"].as_str().unwrap().to_owned();
    for u in others {
        let user = u.home.file_name().unwrap().to_str().unwrap();
        owner.ok(&["group", "invite", &gid, user]);
        u.ok(&["accept", &gid]);
        owner.ok(&["sync"]);
    }
    gid
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The lines a child writes to `out`, on a channel (read by a thread).
fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A running `read --follow` (killed when dropped).
pub struct Follow {
    pub child: Child,
    /// Its standard output, line by line.
    pub lines: std::sync::mpsc::Receiver<String>,
    /// Its standard error, line by line.
    pub errors: std::sync::mpsc::Receiver<String>,
    /// Every line [`Follow::wait_for`] read.
    pub seen: std::cell::RefCell<Vec<String>>,
}

impl Follow {
    /// Reads lines until one satisfies `want` (each within 30 s, else the
    /// test fails); returns it.
    pub fn wait_for(&self, want: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("follow printed the expected line in time");
            self.seen.borrow_mut().push(line.clone());
            if want(&line) {
                return line;
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `duokey --json demo ARGS`, checks that it passed with `checks`
/// checks, all held, and showed a conversation; its JSON lines.
pub fn demo(args: &[&str], checks: usize) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(bin("duokey"))
        .args(["--json", "demo"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ran: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("check").is_some()).collect();
    assert_eq!(ran.len(), checks, "{stdout}");
    assert!(ran.iter().all(|c| c["ok"] == true), "{stdout}");
    assert!(
        lines.iter().any(|l| l["line"]["kind"] == "message"),
        "{stdout}"
    );
    assert!(
        lines.last().unwrap()["step"]
            .as_str()
            .unwrap()
            .contains("properties held")
    );
    lines
}
