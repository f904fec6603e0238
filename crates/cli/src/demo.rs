//! `duokey demo` (issue 4): AS+GMS+CS in-process on loopback, five users, and
//! every security claim proved by a real attempt with what each party holds.
//! Exits 0 only if every property held.

use duokey_crypto::*;
use duokey_proto::Grant;
use duokey_server::{Node, dev};
use duokey_storage::Db;
use duokey_terminal::{ClientConfig, Error, Line, Result, Terminal};
use prost::Message as _;

struct Demo {
    dir: tempfile::TempDir,
    cfg: ClientConfig,
    passed: Vec<String>,
}

/// `duokey --json demo`: every step, check and history line as one JSON
/// object per line (`{"step"}`, `{"check","ok"}`, `{"viewer","kind",…}`).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

fn say(text: &str) {
    if json() {
        println!("{}", serde_json::json!({ "step": text }));
    } else {
        println!("\n== {text}");
    }
}

impl Demo {
    fn check(&mut self, ok: bool, claim: &str) -> Result<()> {
        if json() {
            println!("{}", serde_json::json!({ "check": claim, "ok": ok }));
        } else if ok {
            println!("   [ok] {claim}");
        } else {
            println!("   [FAILED] {claim}");
        }
        if ok {
            self.passed.push(claim.to_owned());
            Ok(())
        } else {
            Err(Error::User(format!("demo property failed: {claim}")))
        }
    }

    async fn user(&self, name: &str) -> Result<Terminal> {
        let db = Db::open_sqlite(&self.dir.path().join("server/as.db"))
            .await
            .map_err(|e| Error::User(e.to_string()))?;
        let user = UserId::new(name)?;
        let token = duokey_accounts::issue_token(&db, &user)
            .await
            .map_err(|e| Error::User(e.to_string()))?;
        db.close().await;
        Terminal::init(&self.dir.path().join(name), &user, &token, &self.cfg, None).await
    }

    /// Every envelope the CS stores for a group: the CS operator's view.
    async fn cs_envelopes(&self, gid: &[u8; 16]) -> Result<Vec<Vec<u8>>> {
        let db = Db::open_sqlite(&self.dir.path().join("server/cs.db"))
            .await
            .map_err(|e| Error::User(e.to_string()))?;
        let rows = db
            .fetch_log(gid, 0, 1000)
            .await
            .map_err(|e| Error::User(e.to_string()))?;
        db.close().await;
        Ok(rows.into_iter().map(|e| e.envelope).collect())
    }

    /// Every grant (with its RN2) the GMS ever issued: the GMS operator's view.
    async fn gms_grants(&self) -> Result<Vec<Grant>> {
        let db = Db::open_sqlite(&self.dir.path().join("server/gms.db"))
            .await
            .map_err(|e| Error::User(e.to_string()))?;
        let all = db
            .all_grants()
            .await
            .map_err(|e| Error::User(e.to_string()))?;
        db.close().await;
        Ok(all
            .iter()
            .filter_map(|b| Grant::decode(b.as_slice()).ok())
            .collect())
    }
}

/// Every group key an attacker can form from R1 values and grants.
fn candidate_keys(
    gid: &[u8; 16],
    name: &str,
    r1s: &[(u32, R1)],
    grants: &[Grant],
) -> Vec<GroupKey> {
    let mut keys = Vec::new();
    let Ok(name) = GroupName::new(name) else {
        return keys;
    };
    for g in grants.iter().filter(|g| g.group_id == gid.as_slice()) {
        let Ok(rn2) = Rn2::from_slice(&g.rn2) else {
            continue;
        };
        for (v1, r1) in r1s {
            let Ok(at) = r1.ratchet_to(g.rn2_version) else {
                continue;
            };
            for label in [g.rn1_version, *v1] {
                if let Ok(k) = GroupKey::derive(
                    &at,
                    &rn2,
                    &GroupId(*gid),
                    &name,
                    Epoch::new(label, g.rn2_version),
                ) {
                    keys.push(k);
                }
            }
        }
    }
    keys
}

/// Tries every key on every envelope; returns how many envelopes opened.
fn opened_with(envelopes: &[Vec<u8>], keys: &[GroupKey]) -> usize {
    envelopes
        .iter()
        .filter(|e| {
            EnvelopeRef::parse(e, &Limits::default())
                .is_ok_and(|env| keys.iter().any(|k| env.decrypt(k).is_ok()))
        })
        .count()
}

async fn read_texts(t: &mut Terminal, gid: &[u8; 16]) -> Result<Vec<String>> {
    t.sync().await?;
    t.sync_messages(gid).await?;
    Ok(t.history(gid)
        .await?
        .into_iter()
        .filter_map(|l| {
            if let Line::Message(m) = l {
                Some(m.text)
            } else {
                None
            }
        })
        .collect())
}

async fn invite_and_join(alice: &mut Terminal, other: &mut Terminal, gid: &[u8; 16]) -> Result<()> {
    alice.invite(gid, other.user(), Rights::NONE).await?;
    other.sync().await?;
    other.accept(&hex::encode(gid)).await?;
    alice.sync().await?;
    other.sync().await
}

/// Runs the walkthrough.
pub async fn run(json: bool) -> Result<()> {
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir()?;
    let server_dir = dir.path().join("server");
    say(
        "Starting AS + GMS + CS in this process on 127.0.0.1 (TLS 1.3, mutual certificates, SQLite)",
    );
    let mut scfg = dev::prepare(&server_dir, "127.0.0.1:0", "127.0.0.1:0")
        .map_err(|e| Error::User(e.to_string()))?;
    scfg.limits.min_rotate_every_secs = 1;
    let node = Node::start(&scfg)
        .await
        .map_err(|e| Error::User(e.to_string()))?;
    let (gms_addr, cs_addr) = (
        node.gms_addr.ok_or(Error::Internal("gms"))?,
        node.cs_addr.ok_or(Error::Internal("cs"))?,
    );
    let client = dev::write_client_file(&server_dir, gms_addr, cs_addr)
        .map_err(|e| Error::User(e.to_string()))?;
    let cfg = ClientConfig::load(&client)?;
    let mut demo = Demo {
        dir,
        cfg,
        passed: Vec::new(),
    };
    let result = walkthrough(&mut demo, &node).await;
    node.shutdown().await;
    result?;
    say(&format!("All {} properties held.", demo.passed.len()));
    Ok(())
}

async fn walkthrough(demo: &mut Demo, node: &duokey_server::RunningNode) -> Result<()> {
    say("Enrolling alice, bob, carol, dave and erin (each terminal makes its own Ed25519 key)");
    let mut alice = demo.user("alice").await?;
    let mut bob = demo.user("bob").await?;
    let mut carol = demo.user("carol").await?;
    let mut dave = demo.user("dave").await?;
    let mut erin = demo.user("erin").await?;

    say("alice creates group \"project\" and invites bob, carol and dave");
    let g = alice
        .create_group("project", duokey_terminal::GroupPolicy::default())
        .await?;
    let gid = alice.resolve_group(&g.group_id).await?;
    for t in [&mut bob, &mut carol, &mut dave] {
        invite_and_join(&mut alice, t, &gid).await?;
    }
    let members: Vec<String> = alice
        .members(&gid)
        .await?
        .into_iter()
        .map(|m| m.user)
        .collect();
    demo.check(
        members == ["alice", "bob", "carol", "dave"],
        "bob, carol and dave joined through RN1 sent terminal to terminal",
    )?;

    say("Everyone chats");
    let before = [
        "hello from alice",
        "bob here",
        "carol says hi",
        "dave: see you",
    ];
    for (t, text) in [&mut alice, &mut bob, &mut carol, &mut dave]
        .into_iter()
        .zip(before)
    {
        t.sync().await?;
        t.send(&gid, text).await?;
    }
    for t in [&mut alice, &mut bob, &mut carol, &mut dave] {
        let texts = read_texts(t, &gid).await?;
        let who = t.user().to_string();
        demo.check(texts == before, &format!("{who} reads all four messages"))?;
    }

    say("The CS operator holds every envelope; the GMS operator holds every RN2");
    let envelopes = demo.cs_envelopes(&gid).await?;
    let leaked = envelopes.iter().any(|e| {
        before
            .iter()
            .any(|m| e.windows(m.len()).any(|w| w == m.as_bytes()))
    });
    demo.check(
        !envelopes.is_empty() && !leaked,
        "no message text appears in the CS's stored envelopes",
    )?;
    let grants = demo.gms_grants().await?;
    let guessed = [(1u32, R1::from_bytes([0; 32], 1))];
    let keys = candidate_keys(&gid, "project", &guessed, &grants);
    demo.check(
        opened_with(&envelopes, &keys) == 0,
        "CS + GMS operators together, with every RN2 ever issued but no RN1, open none of the envelopes",
    )?;

    say("alice removes dave: RN2 and RN1 are both replaced");
    let dave_old_r1s = dave.held_r1s(&gid).await?;
    alice.remove(&gid, dave.user()).await?;
    for t in [&mut bob, &mut carol] {
        t.sync().await?;
    }
    alice
        .send(&gid, "after dave left: the launch is on friday")
        .await?;
    let texts = read_texts(&mut bob, &gid).await?;
    demo.check(
        texts.last().map(String::as_str) == Some("after dave left: the launch is on friday"),
        "bob reads alice's message under the new key",
    )?;
    dave.sync().await?;
    let refused = dave
        .sync_messages(&gid)
        .await
        .map(|m| m.is_empty())
        .unwrap_or(true);
    demo.check(
        refused,
        "dave's terminal gets nothing new: the CS refuses him",
    )?;
    let envelopes = demo.cs_envelopes(&gid).await?;
    let last = envelopes.last().cloned().into_iter().collect::<Vec<_>>();
    let grants = demo.gms_grants().await?;
    let keys = candidate_keys(&gid, "project", &dave_old_r1s, &grants);
    demo.check(
        opened_with(&last, &keys) == 0,
        "dave with all his old keys, even given every RN2 by the GMS operator, cannot open the new message",
    )?;

    say("erin joins later");
    invite_and_join(&mut alice, &mut erin, &gid).await?;
    alice.send(&gid, "welcome erin").await?;
    let texts = read_texts(&mut erin, &gid).await?;
    demo.check(
        texts == ["welcome erin"],
        "erin reads what is sent after she joined, and nothing before",
    )?;
    let earlier = &envelopes[..envelopes.len()];
    let keys = candidate_keys(
        &gid,
        "project",
        &erin.held_r1s(&gid).await?,
        &demo.gms_grants().await?,
    );
    demo.check(
        opened_with(earlier, &keys) == 0,
        "erin, even given every old RN2 by a dishonest GMS, cannot open the history (the RN1 ratchet stops her)",
    )?;

    say("The GMS rotates RN2 periodically");
    let gms = node.gms.as_ref().ok_or(Error::Internal("gms"))?;
    let before_v = alice
        .list_groups()
        .await?
        .into_iter()
        .find(|x| x.name == "project")
        .map(|x| x.rn2_version)
        .unwrap_or(0);
    gms.rotate_due(i64::try_from(duokey_terminal::now_ms()).unwrap_or(i64::MAX) + 2 * 3600 * 1000)
        .await;
    alice.sync().await?;
    alice.send(&gid, "new epoch, same conversation").await?;
    let after_v = alice
        .list_groups()
        .await?
        .into_iter()
        .find(|x| x.name == "project")
        .map(|x| x.rn2_version)
        .unwrap_or(0);
    let mut all_read = true;
    for t in [&mut bob, &mut carol, &mut erin] {
        all_read &= read_texts(t, &gid).await?.last().map(String::as_str)
            == Some("new epoch, same conversation");
    }
    demo.check(
        after_v > before_v && all_read,
        "after the periodic rotation every member still reads, under a new epoch",
    )?;
    print_history(&mut bob, &gid).await
}

async fn print_history(t: &mut Terminal, gid: &[u8; 16]) -> Result<()> {
    say(&format!("What {} sees", t.user()));
    for line in t.history(gid).await? {
        match line {
            _ if json() => println!(
                "{}",
                serde_json::json!({ "viewer": t.user().as_str(), "line": line })
            ),
            Line::Message(m) => println!("   {}: {}", m.sender, m.text),
            Line::Notice(n) => println!("   -- {}", n.notice),
        }
    }
    Ok(())
}
