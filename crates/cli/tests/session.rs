//! The unlocked session (DESIGN D44, PROTOCOL §9.6), on the real binaries:
//! `duokey unlock` starts an agent that holds the profile key, later
//! commands open the profile without the passphrase, `duokey lock` ends it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use support::Server;

const WRONG: &str = "not the passphrase";

/// The pid of the agent serving `home`, from /proc.
fn agent_pid(home: &std::path::Path) -> Option<u32> {
    let home = home.to_str().unwrap();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let serves = args.contains(&b"agent".as_slice()) && args.contains(&home.as_bytes());
        serves.then_some(pid)
    })
}

/// Whether process `pid` ends within `secs` seconds: waits on its pidfd,
/// which becomes readable when it exits.
fn ends_within(pid: u32, secs: i64) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return true; // already gone
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let within = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&within)).unwrap() == 1
}

#[test]
fn an_unlocked_profile_opens_without_the_passphrase_until_locked() {
    let srv = Server::start();
    let alice = srv.user("alice");
    alice.ok(&["group", "create", "proj"]);
    // Without a session a wrong passphrase is refused.
    let out = alice.run_with(&["status"], WRONG);
    assert!(!out.status.success());

    let out = alice.ok(&["unlock", "--for", "10m"]);
    assert!(out.contains("Unlocked for 10 min"), "{out}");
    let socket = alice.home.join("agent.sock");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // The passphrase given is wrong: only the agent's key can open it.
    let out = alice.run_with(&["send", "proj", "while unlocked"], WRONG);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(alice.texts("proj"), ["while unlocked"]);

    // The agent: key in locked memory, no passphrase in its environment.
    let pid = agent_pid(&alice.home).expect("the agent runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(locked_kb >= 4, "{status}");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !environ.windows(17).any(|w| w == b"DUOKEY_PASSPHRASE"),
        "the agent must not inherit the passphrase"
    );

    let out = alice.ok(&["lock"]);
    assert!(out.contains("Locked"), "{out}");
    assert!(!socket.exists());
    let out = alice.run_with(&["status"], WRONG);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(alice.ok(&["lock"]).contains("Not unlocked"));
    assert!(ends_within(pid, 10), "the agent ends right after `lock`");
}

#[test]
fn unlock_with_a_wrong_passphrase_starts_nothing() {
    let srv = Server::start();
    let alice = srv.user("alice");
    let out = alice.run_with(&["unlock"], WRONG);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!alice.home.join("agent.sock").exists());
    assert!(agent_pid(&alice.home).is_none());
}

#[test]
fn a_profile_without_passphrase_has_nothing_to_unlock() {
    let srv = Server::start();
    let bob = srv.user_without_passphrase("bob");
    let err = bob.fails(&["unlock"]);
    assert!(err.contains("nothing to unlock"), "{err}");
}

#[test]
fn the_session_ends_when_the_profile_is_removed() {
    let srv = Server::start();
    let alice = srv.user("alice");
    alice.ok(&["unlock"]);
    let pid = agent_pid(&alice.home).expect("the agent runs");
    std::fs::remove_file(alice.home.join("profile.db")).unwrap();
    // It checks every 2 s.
    assert!(ends_within(pid, 10), "the agent outlived its profile");
}

/// A `duokey` that leads its own session (a tmux pane running `duokey chat`
/// without a shell) is no login to watch: the agent it starts keeps to its
/// deadline instead of ending with it.
#[test]
fn an_agent_started_by_a_session_leader_outlives_it() {
    let srv = Server::start();
    let alice = srv.user("alice");
    let out = std::process::Command::new("setsid")
        .arg("--wait")
        .arg(support::bin("duokey"))
        .arg("--home")
        .arg(&alice.home)
        .args(["unlock", "--for", "10m"])
        .env("DUOKEY_PASSPHRASE", &alice.passphrase)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("setsid (util-linux) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = agent_pid(&alice.home).expect("the agent runs");
    // Its starter is gone; an agent watching it would end within 2 s.
    assert!(
        !ends_within(pid, 5),
        "the agent ended with the session leader that started it"
    );
    assert!(alice.ok(&["lock"]).contains("Locked"));
    assert!(ends_within(pid, 10));
}
