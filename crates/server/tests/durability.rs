//! SPEC §5, DESIGN D13: `kill -9` of the server after acknowledged posts loses
//! none of them. Runs the real `duokey-server` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_proto::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    gms: String,
    cs: String,
}

/// Starts `duokey-server dev` on ephemeral ports and reads the bound
/// addresses from its first line of output.
fn start(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_duokey-server"))
        .args(["dev", "--dir"])
        .arg(dir)
        .args(["--gms-addr", "127.0.0.1:0", "--cs-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Duokey server: GMS+AS on A, CS on B, data in DIR"
    let words: Vec<&str> = line.split_whitespace().collect();
    let gms = words[words.iter().position(|w| *w == "on").unwrap() + 1]
        .trim_end_matches(',')
        .to_owned();
    let cs = words[words.iter().rposition(|w| *w == "on").unwrap() + 1]
        .trim_end_matches(',')
        .to_owned();
    Server { child, gms, cs }
}

#[tokio::test]
async fn kill_9_after_acknowledged_posts_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut net = duokey_testkit::Remote::attach(dir.path(), &server.gms, &server.cs);
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    alice.cs_ready(&g.group_id).await;
    let mut acked = Vec::new();
    for i in 0..50 {
        let env = alice.envelope(&g.group_id, &format!("durable {i}"));
        let seq = alice
            .cs
            .post(PostRequest {
                group_id: g.group_id.clone(),
                envelope: env.clone(),
            })
            .await
            .unwrap();
        acked.push((seq.into_inner().log_seq, env));
    }
    let mut child = server.child;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let server = start(dir.path());
    net.reconnect(&server.gms, &server.cs);
    let mut alice = net.reconnect_user(alice);
    let stored = alice.fetch(&g.group_id, 0).await.unwrap();
    let stored: Vec<(u64, Vec<u8>)> = stored
        .into_iter()
        .map(|e| (e.log_seq, e.envelope))
        .collect();
    assert_eq!(
        stored, acked,
        "every acknowledged envelope survived, in order"
    );
    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();
}
