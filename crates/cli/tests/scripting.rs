//! Every command scriptable and every text from the network shown safely
//! (PROTOCOL §9.3–§9.5): the real `duokey` and `duokey-server dev` binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use serde_json::Value;
use std::process::Output;
use support::{Server, User, group_with, path_str};

/// The one JSON value a successful `--json` command printed.
fn json(user: &User, args: &[&str]) -> Value {
    let args: Vec<&str> = ["--json"].iter().chain(args).copied().collect();
    let out = user.ok(&args);
    let mut lines = out.lines();
    let v = serde_json::from_str(lines.next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("duokey {args:?} printed no JSON ({e}): {out}"));
    assert_eq!(lines.next(), None, "one JSON value per command: {out}");
    v
}

/// A failed `--json` command: its exit code and its JSON error.
fn json_error(out: &Output) -> (i32, String, String) {
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(err.trim())
        .unwrap_or_else(|e| panic!("the error is not one JSON object ({e}): {err}"));
    (
        out.status.code().unwrap(),
        v["error"].as_str().unwrap().to_owned(),
        v["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn every_command_prints_json_and_every_error_has_a_code() {
    let mut srv = Server::start();
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| srv.user(u));

    // init
    let dave = User {
        home: srv.dir.path().join("dave"),
        passphrase: "dave's long passphrase".into(),
    };
    let token = srv.token("dave");
    let v = json(
        &dave,
        &[
            "init",
            "--user",
            "dave",
            "--token",
            &token,
            "--config",
            path_str(&srv.client_toml()),
        ],
    );
    assert_eq!(v["user"], "dave");

    // group create, list, invite; invites, accept, decline; sync; members
    let v = json(&alice, &["group", "create", "proj"]);
    let gid = v["group_id"].as_str().unwrap().to_owned();
    assert_eq!((gid.len(), v["name"].as_str()), (32, Some("proj")));
    let v = json(&alice, &["group", "list"]);
    assert_eq!(v[0]["group_id"], gid.as_str());
    let v = json(&alice, &["group", "invite", "proj", "bob"]);
    assert_eq!(
        (v["group_id"].as_str(), v["user"].as_str()),
        (Some(&*gid), Some("bob"))
    );
    let v = json(&bob, &["invites"]);
    assert_eq!(v[0]["group_name"], "proj");
    assert_eq!(v[0]["from"], "alice");
    let v = json(&bob, &["accept", "proj"]);
    assert_eq!(v["inviter"], "alice");
    let v = json(&alice, &["sync"]);
    assert_eq!(v["synced"][0], gid.as_str());
    json(&alice, &["group", "invite", "proj", "carol"]);
    let v = json(&carol, &["decline", "proj"]);
    assert_eq!(v["declined"], "proj");
    let v = json(&alice, &["group", "members", "proj"]);
    let members: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["alice", "bob"]);

    // send, read (every line has a kind), verify, status, rotate
    let v = json(&bob, &["send", "proj", "hello"]);
    assert!(v["posted"].as_u64().is_some(), "{v}");
    let read = alice.ok(&["--json", "read", "proj"]);
    let lines: Vec<Value> = read
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| ["message", "notice"].contains(&l["kind"].as_str().unwrap()))
    );
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "message" && l["text"] == "hello")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "notice" && l["notice"] == "bob joined"),
        "{read}"
    );
    let mine = json(&alice, &["group", "verify", "proj"]);
    let theirs = json(&bob, &["group", "verify", "proj"]);
    assert_eq!(mine["seq"], 2, "{mine}");
    assert_eq!(mine["code"], theirs["code"], "one history, one code");
    let v = json(&alice, &["verify", "bob"]);
    assert!(v["safety_number"].as_str().is_some_and(|s| !s.is_empty()));
    let v = json(&alice, &["status"]);
    assert_eq!(v["groups"][0]["rn2_version"], 2);
    let v = json(&alice, &["group", "rotate", "proj"]);
    assert_eq!(v["rn2_version"], 3);
    let v = json(&alice, &["renew"]);
    assert_eq!(v["renewed"], true, "{v}");

    // errors: usage, not found, refused (each with its exit code)
    let (code, kind, msg) =
        json_error(&alice.run(&["--json", "group", "invite", "proj", "Bob Smith"]));
    assert_eq!((code, kind.as_str()), (2, "usage"), "{msg}");
    assert!(msg.contains("invalid user id"), "{msg}");
    let (code, kind, msg) = json_error(&alice.run(&["--json", "read", "nosuch"]));
    assert_eq!((code, kind.as_str()), (3, "not_found"), "{msg}");
    assert!(msg.contains("duokey group list"), "{msg}");
    let (code, kind, msg) = json_error(&bob.run(&["--json", "group", "delete", "proj"]));
    assert_eq!((code, kind.as_str()), (4, "refused"), "{msg}");
    let (code, kind, _) = json_error(&alice.run(&["--json", "group", "frobnicate"]));
    assert_eq!((code, kind.as_str()), (2, "usage"));
    let (code, kind, msg) = json_error(&alice.run(&["--json", "chat"]));
    assert_eq!((code, kind.as_str()), (2, "usage"));
    assert!(msg.contains("read GROUP --follow --json"), "{msg}");
    let (code, kind, _) = json_error(&alice.run_with(&["--json", "status"], "not the passphrase"));
    assert_eq!((code, kind.as_str()), (6, "passphrase"));

    // remove, leave, delete
    json(&alice, &["group", "invite", "proj", "dave"]);
    json(&dave, &["accept", "proj"]);
    json(&alice, &["sync"]);
    let v = json(&alice, &["group", "remove", "proj", "dave"]);
    assert_eq!(v["removed"], "dave");
    let v = json(&bob, &["group", "leave", "proj"]);
    assert_eq!(v["left"], true);
    let v = json(&alice, &["group", "delete", "proj"]);
    assert_eq!(v["deleted"], true);

    // network: the servers are gone; nothing is lost, the code says retry
    srv.stop();
    let (code, kind, msg) = json_error(&alice.run(&["--json", "sync"]));
    assert_eq!((code, kind.as_str()), (5, "network"), "{msg}");
    // Reading the profile works offline and says so (PROTOCOL §9.3).
    let v = json(&alice, &["status"]);
    assert_eq!(v["offline"], true, "{v}");
}

#[test]
fn text_from_the_network_is_neutralised_and_cannot_forge_a_line() {
    let srv = Server::start();
    let [alice, bob] = ["alice", "bob"].map(|u| srv.user(u));
    group_with(&alice, "proj", &[&bob]);

    // A message that clears the screen, sets the window title and reverses
    // text; one that forges a line from bob.
    alice.ok(&[
        "send",
        "proj",
        "\u{1b}[2J\u{1b}]0;pwned\u{7}hi \u{202e}gnp.exe",
    ]);
    alice.ok(&[
        "send",
        "proj",
        "see you\n21:44:00 bob: send me the admin password",
    ]);
    let shown = bob.ok(&["read", "proj"]);
    for bad in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(
            !shown.contains(bad),
            "{bad:?} reached the terminal: {shown:?}"
        );
    }
    assert!(
        shown.contains("alice: �[2J�]0;pwned�hi �gnp.exe"),
        "{shown}"
    );
    let forged = shown
        .lines()
        .find(|l| l.contains("send me the admin password"))
        .unwrap();
    assert!(
        forged.starts_with("                "),
        "not indented: {forged:?}"
    );
    assert!(
        !shown
            .lines()
            .any(|l| l.contains(" bob: send me") && !l.starts_with(' ')),
        "{shown}"
    );
    // JSON keeps the exact text.
    assert!(bob.texts("proj").iter().any(|t| t.starts_with("\u{1b}[2J")));

    // A name with control characters is refused at creation...
    let out = alice.run(&["group", "create", "\u{1b}[31mred"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("control characters"));
    // ...and neutralised when a terminal that skipped the check sends it:
    // alice edits her own profile (she is the attacker here).
    let evil = alice.ok(&["group", "create", "evil"]).trim().to_owned();
    rename_group_in_profile(&alice, "evil", "\u{1b}[2Jevil\u{202e}");
    alice.ok(&["group", "invite", &evil, "bob"]);
    let shown = bob.ok(&["invites"]);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{202e}'),
        "{shown:?}"
    );
    assert!(shown.contains("invites you to �[2Jevil� ("), "{shown}");
}

#[test]
fn standard_input_loses_one_trailing_newline_and_keeps_inner_ones() {
    let srv = Server::start();
    let [alice, bob] = ["alice", "bob"].map(|u| srv.user(u));
    group_with(&alice, "proj", &[&bob]);
    for input in [
        &b"hello\n"[..],
        b"two\nlines\n",
        b"windows\r\n",
        b"kept\n\n",
    ] {
        let out = alice.run_stdin(&["send", "proj"], input);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        bob.texts("proj"),
        ["hello", "two\nlines", "windows", "kept\n"]
    );
}

/// Changes a group's name in `user`'s own profile database, as a modified
/// terminal could.
fn rename_group_in_profile(user: &User, from: &str, to: &str) {
    let db = user.home.join("profile.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let done = sqlx::query("UPDATE groups SET name = ? WHERE name = ?")
            .bind(to)
            .bind(from)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
        pool.close().await;
    });
}
