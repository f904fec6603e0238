//! Daily use (DESIGN D45, D52), on the real binaries: groups one is no
//! longer in, the owner's leave, `whoami`, and errors that say what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use support::{Server, assert_success, group_with, init_args, server_command};

fn names(list: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(list).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{} {}",
                g["name"].as_str().unwrap(),
                g["state"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn groups_one_left_are_hidden_forgotten_and_free_their_names() {
    let srv = Server::start();
    let [alice, bob] = ["alice", "bob"].map(|u| srv.user(u));
    let old = group_with(&alice, "ops", &[&bob]);
    alice.ok(&["send", "ops", "before the deletion"]);
    bob.ok(&["read", "ops"]);
    alice.ok(&["group", "delete", "ops", "--yes"]);
    bob.ok(&["sync"]);
    // Listed only with --all.
    assert!(names(&bob.ok(&["--json", "group", "list"])).is_empty());
    assert_eq!(
        names(&bob.ok(&["--json", "group", "list", "--all"])),
        ["ops deleted"]
    );
    // A new group of the same name: the name means the active one.
    group_with(&alice, "ops", &[&bob]);
    bob.ok(&["sync"]);
    bob.ok(&["send", "ops", "in the new ops"]);
    assert_eq!(alice.texts("ops"), ["in the new ops"]);
    // Forgetting an active group is refused; the deleted one is erased.
    let err = bob.fails(&["group", "forget", "ops"]);
    assert!(err.contains("still a member"), "{err}");
    let out = bob.ok(&["group", "forget", &old]);
    assert!(out.contains("Forgot"), "{out}");
    assert_eq!(
        names(&bob.ok(&["--json", "group", "list", "--all"])),
        ["ops active"]
    );
    let err = bob.fails(&["read", &old]);
    assert!(err.contains("no group"), "{err}");
    // Its messages and keys are gone from the profile file.
    let profile = std::fs::read(bob.home.join("profile.db")).unwrap();
    let id = hex_bytes(&old);
    assert!(
        !profile.windows(id.len()).any(|w| w == id.as_slice()),
        "the forgotten group's id is still in the profile"
    );
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The owner cannot leave (SPEC §4.7) and is told both ways out: delete
/// the group, or hand it to a member (`group transfer`, PROTOCOL §4.8) and
/// then leave. After a transfer the owner's powers are the new owner's.
#[test]
fn the_owner_cannot_leave_and_is_told_what_to_do() {
    let srv = Server::start();
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| srv.user(u));
    group_with(&alice, "proj", &[&bob, &carol]);
    let err = alice.fails(&["group", "leave", "proj"]);
    assert!(
        err.contains("an owner cannot leave")
            && err.contains("duokey group delete")
            && err.contains("duokey group transfer"),
        "{err}"
    );
    // Still a member: the group works.
    alice.ok(&["send", "proj", "still here"]);
    assert_eq!(bob.texts("proj"), ["still here"]);

    // Only the owner hands it over, and only to a member.
    let err = bob.fails(&["group", "transfer", "proj", "carol"]);
    assert!(err.contains("only the group's owner (alice)"), "{err}");
    let err = alice.fails(&["group", "transfer", "proj", "dave"]);
    assert!(err.contains("dave is not a member"), "{err}");
    let v = alice.json(&["group", "transfer", "proj", "bob"]);
    assert_eq!(v["owner"], "bob", "{v}");
    let members = carol.ok(&["group", "members", "proj"]);
    assert!(members.contains("bob  owner"), "{members}");
    assert!(members.contains("alice  invite,remove"), "{members}");
    let history = carol.ok(&["read", "proj"]);
    assert!(
        history.contains("bob is now the group's owner"),
        "{history}"
    );

    // The former owner may leave now; the new owner may not, and only the
    // new owner may delete.
    let err = bob.fails(&["group", "leave", "proj"]);
    assert!(err.contains("an owner cannot leave"), "{err}");
    alice.ok(&["group", "leave", "proj"]);
    bob.ok(&["send", "proj", "after the hand-over"]);
    assert_eq!(carol.texts("proj"), ["still here", "after the hand-over"]);
    let err = carol.fails(&["group", "delete", "proj", "--yes"]);
    assert!(err.contains("only the owner"), "{err}");
    bob.ok(&["group", "delete", "proj", "--yes"]);
}

#[test]
fn whoami_answers_from_the_profile_alone() {
    let mut srv = Server::start();
    let alice = srv.user("alice");
    srv.stop();
    // Locked, and no passphrase to give: nothing it shows is secret.
    let out = support::duokey_at(&alice.home)
        .arg("whoami")
        .env_remove("DUOKEY_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    assert!(text.starts_with("alice\n"), "{text}");
    assert!(text.contains("locked"), "{text}");
    let v = alice.json(&["whoami"]);
    assert_eq!(v["user"], "alice");
    assert!(v["certificate"]["not_after"].as_i64().unwrap() > 0);
    assert!(
        v["servers"]["cs"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert!(v["unlocked_secs"].is_null());
    alice.ok(&["unlock", "--for", "5m"]);
    let v = alice.json(&["whoami"]);
    assert!(v["unlocked_secs"].as_u64().unwrap() > 200, "{v}");
    alice.ok(&["lock"]);
}

#[test]
fn verifying_yourself_says_what_to_do() {
    let srv = Server::start();
    let alice = srv.user("alice");
    let err = alice.fails(&["verify", "alice"]);
    assert!(
        err.contains("that is you") && err.contains("whoami"),
        "{err}"
    );
}

#[test]
fn server_logs_written_to_a_file_are_plain_text() {
    let srv = Server::start();
    srv.user("alice");
    let log = std::fs::read(srv.log()).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("serving"), "{text}");
    assert!(!log.contains(&0x1b), "colour codes in a log file: {text}");
}

#[test]
fn read_shows_the_last_lines_or_those_since_a_time() {
    let srv = Server::start();
    let alice = srv.user("alice");
    alice.ok(&["group", "create", "proj"]);
    for text in ["one", "two", "three"] {
        alice.ok(&["send", "proj", text]);
    }
    let texts = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--json", "read", "proj"];
        all.extend_from_slice(args);
        alice
            .ok(&all)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["text"]
                    .as_str()
                    .or(v["notice"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(texts(&["--limit", "2"]), ["two", "three"]);
    assert_eq!(
        texts(&["--since", "1h"]).len(),
        4,
        "the creation notice and three messages"
    );
    assert!(texts(&["--since", "2099-01-01"]).is_empty());
    let out = alice.run(&["read", "proj", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("like 2026-11-30"));
}

#[test]
fn one_invitation_per_person_listed_and_cancellable() {
    let srv = Server::start();
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| srv.user(u));
    alice.ok(&["group", "create", "proj"]);
    alice.ok(&["group", "invite", "proj", "bob"]);
    alice.ok(&["group", "invite", "proj", "bob"]);
    let pending = |u: &support::User| -> Vec<serde_json::Value> {
        serde_json::from_str::<Vec<serde_json::Value>>(&u.ok(&["--json", "invites"])).unwrap()
    };
    assert_eq!(pending(&bob).len(), 1, "the same invitation twice is one");
    // A different offer replaces the first, on both sides.
    alice.ok(&["group", "invite", "proj", "bob", "--can-invite"]);
    let bobs = pending(&bob);
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_eq!(bobs[0]["rights"], "invite");
    let sent: Vec<serde_json::Value> =
        serde_json::from_str(&alice.ok(&["--json", "invites", "--sent"])).unwrap();
    let states: Vec<&str> = sent.iter().map(|i| i["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["waiting", "cancelled"]);
    bob.ok(&["accept", "proj"]);
    alice.ok(&["sync"]);
    let members = alice.ok(&["group", "members", "proj"]);
    assert!(members.contains("bob  invite"), "{members}");

    // A cancelled invitation: accepting it adds nobody.
    alice.ok(&["group", "invite", "proj", "carol"]);
    let out = alice.ok(&["group", "uninvite", "proj", "carol"]);
    assert!(out.contains("Cancelled"), "{out}");
    carol.ok(&["accept", "proj"]);
    alice.ok(&["sync"]);
    let members = alice.ok(&["group", "members", "proj"]);
    assert!(!members.contains("carol"), "{members}");
    let err = alice.fails(&["group", "uninvite", "proj", "carol"]);
    assert!(err.contains("invites --sent"), "{err}");
}

/// SIGTERM ends the open streams at once instead of waiting out the grace
/// period for streams that never end on their own; the follower is told.
#[test]
fn sigterm_ends_open_streams_instead_of_waiting_for_them() {
    let mut srv = Server::start();
    let alice = srv.user("alice");
    alice.ok(&["group", "create", "proj"]);
    let follow = alice.follow("proj");
    follow.wait_for(|l| l.contains("created the group"));
    // Both streams open: a message and a key rotation reach it live.
    alice.ok(&["send", "proj", "live"]);
    follow.wait_for(|l| l.contains("\"live\""));
    alice.ok(&["group", "rotate", "proj"]);
    follow.wait_for(|l| l.contains("key rotated"));
    let status = srv.terminate();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(srv.log()).unwrap();
    assert!(
        !log.contains("closing the remaining streams"),
        "the shutdown waited for the streams until its grace ran out"
    );
    let note = follow
        .errors
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the follower said it lost the server");
    assert!(note.contains("offline"), "{note}");
}

#[test]
fn a_profile_moves_to_new_server_addresses_of_the_same_organisation() {
    let srv = Server::start();
    let alice = srv.user("alice");
    alice.ok(&["group", "create", "proj"]);
    let original = srv.client_toml();
    let text = std::fs::read_to_string(&original).unwrap();
    let cs_line = text.lines().find(|l| l.starts_with("cs_url")).unwrap();
    let moved = srv.dir.path().join("moved.toml");
    std::fs::write(
        &moved,
        text.replace(cs_line, "cs_url = \"https://127.0.0.1:9\""),
    )
    .unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    alice.ok(&["profile", "set-servers", "--config", &path(&moved)]);
    let v = alice.json(&["whoami"]);
    assert_eq!(v["servers"]["cs"], "https://127.0.0.1:9");
    // Nothing answers there: the message waits, the sync says so.
    alice.ok(&["send", "proj", "kept while the CS moved"]);
    assert_eq!(alice.run(&["sync"]).status.code(), Some(5));
    alice.ok(&["profile", "set-servers", "--config", &path(&original)]);
    alice.ok(&["sync"]);
    assert_eq!(alice.texts("proj"), ["kept while the CS moved"]);
    // Another organisation's servers are refused.
    let other = Server::start();
    let err = alice.fails(&[
        "profile",
        "set-servers",
        "--config",
        &path(&other.client_toml()),
    ]);
    assert!(err.contains("another organisation's CA"), "{err}");
}

#[test]
fn a_damaged_profile_or_client_toml_says_what_to_do() {
    let srv = Server::start();
    let alice = srv.user("alice");
    alice.ok(&["group", "create", "proj"]);
    let profile = alice.home.join("profile.db");
    let bytes = std::fs::read(&profile).unwrap();
    // Truncated, then empty.
    for damaged in [&bytes[..bytes.len() / 3], &[][..]] {
        for f in ["profile.db-wal", "profile.db-shm"] {
            let _ = std::fs::remove_file(alice.home.join(f));
        }
        std::fs::write(&profile, damaged).unwrap();
        let err = alice.fails(&["status"]);
        assert!(
            err.contains("restore the profile directory from a backup"),
            "{err}"
        );
    }

    // A client.toml whose CA is another organisation's, or not a certificate.
    let other = Server::start();
    let mine = std::fs::read_to_string(srv.client_toml()).unwrap();
    let theirs = std::fs::read_to_string(other.client_toml()).unwrap();
    let ca_at = |t: &str| t.find("ca_cert").unwrap();
    let wrong_ca = format!("{}{}", &mine[..ca_at(&mine)], &theirs[ca_at(&theirs)..]);
    let bad_pem = mine.replacen("MII", "MIX", 1);
    let token = srv.token("bob");
    for (name, text, expected) in [
        ("wrong-ca.toml", wrong_ca, "not from the CA in client.toml"),
        (
            "bad-pem.toml",
            bad_pem,
            "ask your administrator for the client.toml again",
        ),
    ] {
        let path = srv.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let bob = srv.newcomer(&format!("bob-{name}"), "bob's passphrase");
        let out = bob.run(&init_args("bob", &token, &path));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(
            !err.contains("try again shortly"),
            "{name}: not a passing fault: {err}"
        );
    }
}

#[test]
fn server_commands_given_wrongly_say_so_without_blaming_the_configuration() {
    let srv = Server::start();
    let run = |args: &[&str]| {
        let out = server_command(args);
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dir = srv.dir.path().join("srv");
    let err = run(&["enroll", "--dir", dir.to_str().unwrap(), "Bob Smith"]);
    assert!(
        err.contains("\"Bob Smith\" is not a user id") && !err.contains("configuration"),
        "{err}"
    );
    let list = dir.join("revoked.txt");
    let err = run(&["revoke", "--list", list.to_str().unwrap(), "bob"]);
    assert!(
        err.contains("not a certificate serial") && !err.contains("configuration"),
        "{err}"
    );
}

/// `revoke --user`: every certificate of a user at once (a lost laptop);
/// the servers then refuse it.
#[test]
fn an_administrator_revokes_all_of_a_users_certificates() {
    let srv = Server::start();
    let [alice, bob] = ["alice", "bob"].map(|u| srv.user(u));
    group_with(&alice, "proj", &[&bob]);
    bob.ok(&["send", "proj", "before revocation"]);
    let dir = srv.dir.path().join("srv");
    let out = srv.admin(&["revoke", "--user", "bob"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    let serial = bob.json(&["whoami"])["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains(&format!("Revoked bob's certificate {serial}")),
        "{text}"
    );
    let list = std::fs::read_to_string(dir.join("revoked.txt")).unwrap();
    assert!(list.contains(&serial), "{list}");
    // The running server was told (SIGHUP), and bob is told why he is refused.
    assert!(text.contains("refuses them now"), "{text}");
    // Well under the servers' periodic reload (10 s): the signal did it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let refused = loop {
        let out = bob.run(&["send", "proj", "after revocation"]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(std::time::Instant::now() < deadline, "bob is still served");
    };
    assert!(
        refused.contains("certificate was revoked") && refused.contains("enrol again"),
        "{refused}"
    );
    // alice is not touched.
    alice.ok(&["send", "proj", "still fine"]);
}

/// Enrolment tokens: a lifetime chosen at issue, listed while they wait,
/// cancelled by the administrator (then refused at `init`).
#[test]
fn enrolment_tokens_have_a_lifetime_a_list_and_a_cancel() {
    let srv = Server::start();
    let admin = |args: &[&str]| {
        let out = srv.admin(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let issued = admin(&["enroll", "erin", "--ttl", "2h"]);
    assert!(issued.contains("valid until"), "{issued}");
    let token = issued.split_whitespace().last().unwrap().to_owned();
    let list = admin(&["tokens", "list"]);
    assert!(list.contains("erin"), "{list}");
    assert!(!list.contains(&token), "tokens are stored hashed: {list}");
    // Two hours: issued and expiry differ by 2 h in the listing.
    let line = list.lines().find(|l| l.starts_with("erin")).unwrap();
    let times: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.contains(':'))
        .collect();
    let minutes = |t: &str| {
        let (h, m) = t.split_once(':').unwrap();
        h.parse::<i64>().unwrap() * 60 + m.parse::<i64>().unwrap()
    };
    assert_eq!(
        (minutes(times[1]) - minutes(times[0])).rem_euclid(24 * 60),
        120,
        "{line}"
    );
    assert!(admin(&["tokens", "cancel", "erin"]).contains("Cancelled 1"));
    assert!(!admin(&["tokens", "list"]).contains("erin"));
    let erin = srv.newcomer("erin", "erin's passphrase");
    let config = srv.client_toml();
    let err = erin.fails(&init_args("erin", &token, &config));
    assert!(err.contains("unknown, used or expired"), "{err}");
}

/// `client-config` writes, from a server configuration, the client.toml a
/// new user enrols with.
#[test]
fn client_config_writes_what_terminals_enrol_with() {
    let srv = Server::start();
    let dir = srv.dir.path().join("srv");
    let client = std::fs::read_to_string(srv.client_toml()).unwrap();
    let port = |key: &str| {
        let line = client.lines().find(|l| l.starts_with(key)).unwrap();
        line.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    };
    // The configuration with the ports this server really listens on.
    let config = std::fs::read_to_string(dir.join("server.toml")).unwrap();
    let config: String = config
        .lines()
        .map(|l| match l.split_once(" = ") {
            Some(("gms_addr", _)) => format!("gms_addr = \"0.0.0.0:{}\"", port("gms_url")),
            Some(("cs_addr", _)) => format!("cs_addr = \"0.0.0.0:{}\"", port("cs_url")),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config_path = dir.join("public.toml");
    std::fs::write(&config_path, config).unwrap();
    let out_path = srv.dir.path().join("for-users.toml");
    let out = std::process::Command::new(support::bin("duokey-server"))
        .args(["client-config", "--host", "127.0.0.1", "--config"])
        .arg(&config_path)
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_success(&out);
    let written = std::fs::read_to_string(&out_path).unwrap();
    assert!(
        written.contains(&format!(
            "cs_url = \"https://127.0.0.1:{}\"",
            port("cs_url")
        )),
        "{written}"
    );
    let token = srv.token("fred");
    let fred = srv.newcomer("fred", "fred's passphrase");
    fred.ok(&init_args("fred", &token, &out_path));
    fred.ok(&["group", "create", "fred-s"]);
}

/// `config --example` prints a file the check accepts once its paths exist;
/// `config --check` says what is missing without starting anything.
#[test]
fn the_example_configuration_passes_the_check_once_its_files_exist() {
    let srv = Server::start();
    let server = server_command;
    let example = server(&["config", "--example"]);
    assert!(example.status.success());
    let text = String::from_utf8(example.stdout).unwrap();
    assert!(text.contains("[limits]") && text.contains("docs/CONFIG.md"));
    // The example pointed at this server's CA and keys, on free ports.
    let data = srv.dir.path().join("srv");
    let file = srv.dir.path().join("prod.toml");
    let adapted = text
        .replace("/var/lib/duokey", data.to_str().unwrap())
        .replace("0.0.0.0:7443", "127.0.0.1:0")
        .replace("0.0.0.0:7444", "127.0.0.1:0")
        .replace("cs_url = ", "# cs_url = ")
        .replace("metrics_addr = ", "# metrics_addr = ");
    std::fs::write(&file, adapted.replace("ca/ca.key", "ca/missing.key")).unwrap();
    let check = server(&["config", "--check", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && err.contains("tls.ca_key"),
        "{err}"
    );
    std::fs::write(&file, &adapted).unwrap();
    let check = server(&["config", "--check", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_success(&check);
    assert!(said.contains("valid; roles as, gms, cs"), "{said}");
}

/// `duokey status` draws each group's key history: one glyph per key
/// change, `|` where the member key changed, and the latest change in words.
#[test]
fn status_draws_each_groups_key_history() {
    let srv = Server::start();
    let [alice, bob] = ["alice", "bob"].map(|u| srv.user(u));
    group_with(&alice, "proj", &[&bob]);
    alice.ok(&["group", "rotate", "proj"]);
    alice.ok(&["group", "remove", "proj", "bob"]);
    alice.ok(&["sync"]);
    let text = alice.ok(&["status"]);
    let drawn = text
        .lines()
        .find(|l| l.trim_start().starts_with('*'))
        .unwrap_or_else(|| panic!("no timeline in:\n{text}"));
    assert!(drawn.trim_start().starts_with("*+!|-"), "{text}");
    assert!(drawn.contains("last: bob was removed"), "{text}");
    assert!(text.contains("* created"), "{text}");
    let v = alice.json(&["status"]);
    let causes: Vec<&str> = v["groups"][0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["created", "joined", "forced", "removed"]);
}
