//! `duokey demo`: AS+GMS+CS in-process on loopback, five users, and
//! every security claim proved by a real attempt with what each party holds.
//! Exits 0 only if every property held. `duokey demo --cluster` runs the
//! same walkthrough on two GMS+AS and two CS nodes on PostgreSQL and NATS.

use duokey_crypto::*;
use duokey_proto::Grant;
use duokey_server::dev;
use duokey_storage::{AsStore, CsStore, GmsStore};
use duokey_terminal::{ClientConfig, Error, Line, Result, Terminal};
use prost::Message as _;

struct Demo {
    dir: tempfile::TempDir,
    cfg: ClientConfig,
    /// The servers' configuration: where the operators' databases are.
    server: duokey_server::config::ServerConfig,
    passed: Vec<String>,
}

/// Where `duokey demo --cluster` runs.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The PostgreSQL database (the demo works in a schema of its own).
    pub postgres: String,
    /// The NATS server.
    pub nats: String,
}

fn user_error(e: impl std::fmt::Display) -> Error {
    Error::User(e.to_string())
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
        let db = AsStore::open(&self.url(&self.server.database.as_url))
            .await
            .map_err(user_error)?;
        let user = UserId::new(name)?;
        let token = duokey_accounts::issue_token(&db, &user)
            .await
            .map_err(user_error)?;
        db.close().await;
        Terminal::init(&self.dir.path().join(name), &user, &token, &self.cfg, None).await
    }

    /// Every envelope the CS stores for a group: the CS operator's view.
    async fn cs_envelopes(&self, gid: &GroupId) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .cs_log(gid)
            .await?
            .into_iter()
            .map(|e| e.envelope)
            .collect())
    }

    /// The group's log as the CS stores it.
    async fn cs_log(&self, gid: &GroupId) -> Result<Vec<duokey_storage::cs::StoredEnvelope>> {
        let db = CsStore::open(&self.url(&self.server.database.cs))
            .await
            .map_err(user_error)?;
        let rows = db
            .fetch_log(gid.as_slice(), 0, 1000)
            .await
            .map_err(user_error)?;
        db.close().await;
        Ok(rows)
    }

    /// Every R1 of `gid` that `t`'s user can get hold of now: what its
    /// terminal holds, plus every `rn1` item for it that the CS keeps, opened
    /// with its delivery key (an attacker's program drops nothing).
    async fn r1s_reaching(&self, t: &Terminal, gid: &GroupId) -> Result<Vec<(u32, R1)>> {
        let db = CsStore::open(&self.url(&self.server.database.cs))
            .await
            .map_err(user_error)?;
        let inbox = db
            .inbox_after(t.user().as_str(), 0, 10_000)
            .await
            .map_err(user_error)?;
        db.close().await;
        let items: Vec<Vec<u8>> = inbox.into_iter().map(|e| e.item).collect();
        let mut out = t.held_r1s(gid).await?;
        out.extend(t.r1s_in(gid, &items));
        Ok(out)
    }

    /// Every group key `t`'s user can form with the R1s reaching it and
    /// `grants` (every RN2 the GMS issued): what that user could read with
    /// the GMS operator's help.
    async fn keys_reaching(
        &self,
        t: &Terminal,
        gid: &GroupId,
        grants: &[Grant],
    ) -> Result<Vec<GroupKey>> {
        let r1s = self.r1s_reaching(t, gid).await?;
        Ok(candidate_keys(gid, "project", &r1s, grants))
    }

    /// A role's database URL.
    fn url(&self, role: &Option<String>) -> String {
        self.server.db_url(role.as_deref().unwrap_or_default())
    }

    /// Whether what the operators have holds one of `secrets`: every file
    /// of the servers (databases, write-ahead logs, keys) and, on a
    /// cluster, every row of the shared PostgreSQL database.
    async fn servers_hold_any(&self, secrets: &[[u8; 32]]) -> Result<bool> {
        if self.server.nats_url.is_some() {
            let db = CsStore::open(&self.url(&self.server.database.cs))
                .await
                .map_err(user_error)?;
            let held = db.rows_hold_any(secrets).await.map_err(user_error);
            db.close().await;
            if held? {
                return Ok(true);
            }
        }
        let mut dirs = vec![self.dir.path().join("server")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let bytes = std::fs::read(&path)?;
                if secrets
                    .iter()
                    .any(|s| bytes.windows(s.len()).any(|w| w == s))
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Every grant (with its RN2) the GMS ever issued: the GMS operator's view.
    async fn gms_grants(&self) -> Result<Vec<Grant>> {
        let db = GmsStore::open(&self.url(&self.server.database.gms))
            .await
            .map_err(user_error)?;
        let all = db.all_grants().await.map_err(user_error)?;
        db.close().await;
        Ok(all
            .iter()
            .filter_map(|b| Grant::decode(b.as_slice()).ok())
            .collect())
    }
}

/// Every group key an attacker can form from R1 values and grants.
fn candidate_keys(gid: &GroupId, name: &str, r1s: &[(u32, R1)], grants: &[Grant]) -> Vec<GroupKey> {
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
                if let Ok(k) =
                    GroupKey::derive(&at, &rn2, gid, &name, Epoch::new(label, g.rn2_version))
                {
                    keys.push(k);
                }
            }
        }
    }
    keys
}

/// Tries every key on every envelope; how many envelopes opened, or `None`
/// if one does not even parse (a broken harness proves nothing).
fn opened_with(envelopes: &[Vec<u8>], keys: &[GroupKey]) -> Option<usize> {
    let mut opened = 0;
    for e in envelopes {
        let env = EnvelopeRef::parse(e, &Limits::default()).ok()?;
        if keys.iter().any(|k| env.decrypt(k).is_ok()) {
            opened += 1;
        }
    }
    Some(opened)
}

/// The R1 of `held` for `rn1_version`, moved to `rn2_version`: comparable
/// between terminals that stored it at different versions.
fn r1_at(held: &[(u32, R1)], rn1_version: u32, rn2_version: u64) -> Option<[u8; 32]> {
    held.iter()
        .find(|(v, _)| *v == rn1_version)
        .and_then(|(_, r1)| r1.ratchet_to(rn2_version).ok())
        .map(|r1| *r1.expose_secret())
}

/// The group's current RN2 version on `t`.
async fn rn2_version(t: &Terminal, gid: &GroupId) -> Result<u64> {
    Ok(t.list_groups()
        .await?
        .into_iter()
        .find(|g| g.group_id == *gid)
        .map_or(0, |g| g.rn2_version))
}

async fn read_texts(t: &mut Terminal, gid: &GroupId) -> Result<Vec<String>> {
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

async fn invite_and_join(alice: &mut Terminal, other: &mut Terminal, gid: &GroupId) -> Result<()> {
    alice.invite(gid, other.user(), Rights::NONE).await?;
    other.sync().await?;
    other.accept(&hex::encode(gid)).await?;
    alice.sync().await?;
    other.sync().await
}

/// The servers the walkthrough runs on.
enum Servers {
    /// Every role in one node, on SQLite files.
    One(duokey_server::RunningNode),
    /// Two GMS+AS and two CS nodes on PostgreSQL and NATS, in a schema
    /// dropped at the end.
    Cluster(Box<dev::LocalCluster>, duokey_storage::scratch::Schema),
}

impl Servers {
    /// Starts them in `dir`; their configuration comes with them (where
    /// the operators' databases are).
    async fn start(
        dir: &std::path::Path,
        cluster: Option<Cluster>,
    ) -> Result<(Servers, duokey_server::config::ServerConfig)> {
        let edit = |c: &mut duokey_server::config::ServerConfig| c.limits.min_rotate_every_secs = 1;
        let clock = duokey_server::Clock::system();
        let Some(cluster) = cluster else {
            say(
                "Starting AS + GMS + CS in this process on 127.0.0.1 (TLS 1.3, mutual certificates, SQLite)",
            );
            let local = dev::start_local(dir, edit, clock)
                .await
                .map_err(user_error)?;
            return Ok((Servers::One(local.node), local.config));
        };
        let schema = duokey_storage::scratch::Schema::create(&cluster.postgres, "duokey_demo_")
            .await
            .map_err(|e| {
                Error::User(format!(
                    "--cluster needs PostgreSQL at {} ({e}); give another with --postgres URL",
                    cluster.postgres
                ))
            })?;
        say(&format!(
            "Starting a cluster in this process on 127.0.0.1: 2 AS+GMS and 2 CS nodes on PostgreSQL (schema {}) and NATS ({})",
            schema.name, cluster.nats
        ));
        let plan = dev::ClusterPlan {
            database_url: schema.url.clone(),
            nats_url: cluster.nats.clone(),
            subject_prefix: format!("duokey.{}", schema.name),
            gms: 2,
            cs: 2,
        };
        match dev::LocalCluster::start(dir, &plan, edit, clock).await {
            Ok(nodes) => {
                let config = nodes.config.clone();
                Ok((Servers::Cluster(Box::new(nodes), schema), config))
            }
            Err(e) => {
                let _ = schema.drop().await;
                Err(Error::User(format!(
                    "the cluster did not start ({e}); is NATS running at {}? (give another with --nats URL)",
                    cluster.nats
                )))
            }
        }
    }

    /// The GMS node the periodic rotation is asked of.
    fn gms(&self) -> Result<&duokey_server::RunningNode> {
        match self {
            Servers::One(node) => Ok(node),
            Servers::Cluster(c, _) => c.gms.first().ok_or(Error::Internal("no gms node")),
        }
    }

    async fn shutdown(self) -> Result<()> {
        match self {
            Servers::One(node) => node.shutdown().await,
            Servers::Cluster(mut c, schema) => {
                c.shutdown().await;
                schema.drop().await.map_err(user_error)?;
            }
        }
        Ok(())
    }
}

/// Runs the walkthrough, on one node or on a cluster.
pub async fn run(json: bool, cluster: Option<Cluster>) -> Result<()> {
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir()?;
    let server_dir = dir.path().join("server");
    let (mut servers, server) = Servers::start(&server_dir, cluster).await?;
    let cfg = match ClientConfig::load(&server_dir.join("client.toml")) {
        Ok(cfg) => cfg,
        Err(e) => {
            servers.shutdown().await?;
            return Err(e);
        }
    };
    let mut demo = Demo {
        dir,
        cfg,
        server,
        passed: Vec::new(),
    };
    let result = walkthrough(&mut demo, &mut servers).await;
    servers.shutdown().await?;
    result?;
    say(&format!("All {} properties held.", demo.passed.len()));
    Ok(())
}

async fn walkthrough(demo: &mut Demo, servers: &mut Servers) -> Result<()> {
    say("Enrolling alice, bob, carol, dave and erin (each terminal makes its own Ed25519 key)");
    let mut c = Cast {
        alice: demo.user("alice").await?,
        bob: demo.user("bob").await?,
        carol: demo.user("carol").await?,
        dave: demo.user("dave").await?,
        erin: demo.user("erin").await?,
        gid: GroupId([0; 16]),
    };
    the_group_is_formed_terminal_to_terminal(demo, &mut c).await?;
    let sent = everyone_chats(demo, &mut c).await?;
    the_operators_hold_no_rn1(demo, &mut c, &sent).await?;
    let envelopes = a_removed_member_reads_nothing_new(demo, &mut c).await?;
    a_late_joiner_reads_nothing_earlier(demo, &mut c, &envelopes).await?;
    the_gms_rotates_periodically(demo, &mut c, servers.gms()?).await?;
    a_rogue_ca_gets_nothing_from_a_code_invitation(demo, &mut c).await?;
    if let Servers::Cluster(nodes, _) = servers {
        a_node_of_each_role_stops(demo, &mut c, nodes).await?;
    }
    print_history(&mut c.bob, &c.gid).await
}

/// P10: the CA operator, with the CS, mints "frank" (who never enrolled)
/// and answers alice's invitations in his name: a plain invitation hands
/// it RN1 (the honest limit of first contact); one with a code does not.
async fn a_rogue_ca_gets_nothing_from_a_code_invitation(
    demo: &mut Demo,
    c: &mut Cast,
) -> Result<()> {
    use duokey_server::rogue::Rogue;
    say("A rogue CA operator, with the CS, answers invitations in the name of a newcomer");
    let ca = duokey_pki::Ca::load(&demo.server.data_dir.join("ca")).map_err(user_error)?;
    let frank = UserId::new("frank")?;
    let mut rogue = Rogue::mint(&ca, demo.cfg.cs_url.as_slice(), &frank)
        .await
        .map_err(user_error)?;
    let alice = c.alice.user().clone();

    let plain = new_group(&mut c.alice, "plain").await?;
    c.alice.invite(&plain, &frank, Rights::NONE).await?;
    let invite = rogue
        .inbox()
        .await
        .map_err(user_error)?
        .into_iter()
        .find(|i| matches!(i.body, ItemBody::Invite { group_id, .. } if group_id == plain))
        .ok_or(Error::Internal("the invitation did not reach the rogue"))?;
    let stolen = DeliverySecret::generate();
    let ack = ItemBody::Ack {
        invite_id: invite.item_id,
        group_id: plain,
        invite_pub: stolen.public(),
    };
    rogue.send(&alice, ack).await.map_err(user_error)?;
    c.alice.sync().await?;
    let taken = Rogue::rn1_opened(&rogue.inbox().await.map_err(user_error)?, &stolen);
    demo.check(
        taken == 1,
        "without a code, the CA's forged \"frank\" answers alice's invitation and gets RN1: at first contact a plain invitation trusts the CA (the honest limit; compare safety numbers, or use a code)",
    )?;

    let coded = new_group(&mut c.alice, "coded").await?;
    let sent = c
        .alice
        .invite_with_code(
            &coded,
            &frank,
            Rights::NONE,
            duokey_terminal::DEFAULT_CODE_TTL_MS,
        )
        .await?;
    let guess = if sent.code.digits() == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let guessed = DeliverySecret::generate();
    let guess = duokey_crypto::invite_code::InviteCode::parse(guess)?;
    rogue
        .answer_code_invitation(&alice, &c.alice.identity_public(), &coded, &guess, &guessed)
        .await
        .map_err(user_error)?;
    c.alice.sync().await?;
    let taken = Rogue::rn1_opened(&rogue.inbox().await.map_err(user_error)?, &guessed);
    let members: Vec<String> = c
        .alice
        .members(&coded)
        .await?
        .into_iter()
        .map(|m| m.user)
        .collect();
    let told = c
        .alice
        .history(&coded)
        .await?
        .iter()
        .any(|l| matches!(l, Line::Notice(n) if n.notice.contains("did not match the code")));
    demo.check(
        taken == 0 && members == [alice.to_string()] && told,
        "with a code, the forged \"frank\" cannot answer: its guess fails the code check, it gets no RN1, is not added, and alice is told",
    )
}

/// A new group of `t`'s; its id.
async fn new_group(t: &mut Terminal, name: &str) -> Result<GroupId> {
    let g = t
        .create_group(name, duokey_terminal::GroupPolicy::default())
        .await?;
    Ok(g.group_id)
}

/// Cluster only: one CS node and one GMS node stop; every terminal carries
/// on through the others, and nothing is lost or shown twice.
async fn a_node_of_each_role_stops(
    demo: &mut Demo,
    c: &mut Cast,
    nodes: &mut dev::LocalCluster,
) -> Result<()> {
    say("A CS node and a GMS node stop; the terminals fail over to the others");
    for node in [nodes.cs.remove(0), nodes.gms.remove(0)] {
        node.shutdown().await;
    }
    let text = "still here, through the other nodes";
    c.alice.sync().await?;
    c.alice.send(&c.gid, text).await?;
    let mut all_once = true;
    for t in [&mut c.bob, &mut c.carol, &mut c.erin] {
        let texts = read_texts(t, &c.gid).await?;
        all_once &= texts.iter().filter(|x| x.as_str() == text).count() == 1
            && texts.last().map(String::as_str) == Some(text);
    }
    demo.check(
        all_once,
        "with one CS node and one GMS node stopped, every member reads the next message, once",
    )
}

/// The demo's terminals and their group.
struct Cast {
    alice: Terminal,
    bob: Terminal,
    carol: Terminal,
    dave: Terminal,
    erin: Terminal,
    gid: GroupId,
}

async fn the_group_is_formed_terminal_to_terminal(demo: &mut Demo, c: &mut Cast) -> Result<()> {
    say("alice creates group \"project\" and invites bob, carol and dave");
    let g = c
        .alice
        .create_group("project", duokey_terminal::GroupPolicy::default())
        .await?;
    c.gid = g.group_id;
    for t in [&mut c.bob, &mut c.carol, &mut c.dave] {
        invite_and_join(&mut c.alice, t, &c.gid).await?;
    }
    let members: Vec<String> = c
        .alice
        .members(&c.gid)
        .await?
        .into_iter()
        .map(|m| m.user)
        .collect();
    let v = rn2_version(&c.alice, &c.gid).await?;
    let alices = r1_at(&c.alice.held_r1s(&c.gid).await?, 1, v);
    let mut same = alices.is_some();
    for t in [&c.bob, &c.carol, &c.dave] {
        same &= r1_at(&t.held_r1s(&c.gid).await?, 1, v) == alices;
    }
    demo.check(
        members == ["alice", "bob", "carol", "dave"] && same,
        "bob, carol and dave joined through RN1 sent terminal to terminal: each holds alice's R1",
    )?;

    Ok(())
}

async fn everyone_chats(demo: &mut Demo, c: &mut Cast) -> Result<[&'static str; 4]> {
    say("Everyone chats");
    let before = [
        "hello from alice",
        "bob here",
        "carol says hi",
        "dave: see you",
    ];
    for (t, text) in [&mut c.alice, &mut c.bob, &mut c.carol, &mut c.dave]
        .into_iter()
        .zip(before)
    {
        t.sync().await?;
        t.send(&c.gid, text).await?;
    }
    for t in [&mut c.alice, &mut c.bob, &mut c.carol, &mut c.dave] {
        let texts = read_texts(t, &c.gid).await?;
        let who = t.user().to_string();
        demo.check(texts == before, &format!("{who} reads all four messages"))?;
    }

    Ok(before)
}

async fn the_operators_hold_no_rn1(
    demo: &mut Demo,
    c: &mut Cast,
    before: &[&str; 4],
) -> Result<()> {
    say("The CS operator holds every envelope; the GMS operator holds every RN2");
    let envelopes = demo.cs_envelopes(&c.gid).await?;
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
    let alices_r1s = c.alice.held_r1s(&c.gid).await?;
    let with_r1 = candidate_keys(&c.gid, "project", &alices_r1s, &grants);
    let mut r1_values: Vec<[u8; 32]> = Vec::new();
    for g in &grants {
        if let Some(r1) = r1_at(&alices_r1s, g.rn1_version, g.rn2_version) {
            r1_values.push(r1);
        }
    }
    demo.check(
        opened_with(&envelopes, &with_r1) == Some(envelopes.len())
            && !r1_values.is_empty()
            && !demo.servers_hold_any(&r1_values).await?,
        "every envelope opens with RN2 (which the GMS operator holds) and RN1, and no file of the servers holds RN1: CS + GMS operators together open none",
    )?;

    Ok(())
}

/// The envelopes the CS holds once dave is removed.
async fn a_removed_member_reads_nothing_new(demo: &mut Demo, c: &mut Cast) -> Result<Vec<Vec<u8>>> {
    say("alice removes dave: RN2 and RN1 are both replaced");
    c.alice.remove(&c.gid, c.dave.user()).await?;
    for t in [&mut c.bob, &mut c.carol] {
        t.sync().await?;
    }
    c.alice
        .send(&c.gid, "after dave left: the launch is on friday")
        .await?;
    let texts = read_texts(&mut c.bob, &c.gid).await?;
    demo.check(
        texts.last().map(String::as_str) == Some("after dave left: the launch is on friday"),
        "bob reads alice's message under the new key",
    )?;
    // dave's keys as he could have them after the removal: what his
    // terminal kept, and every rn1 item for him the CS holds.
    let daves_r1s = demo.r1s_reaching(&c.dave, &c.gid).await?;
    c.dave.sync().await?;
    // His terminal would no longer ask; an attacker's would: it is made to.
    let newest = demo.cs_log(&c.gid).await?.last().map_or(0, |e| e.log_seq);
    let served = c.dave.served_positions(&c.gid, 0).await?;
    demo.check(
        !served.is_empty() && served.iter().all(|&s| s < newest),
        "dave's terminal, made to ask the CS for the group's log, gets what was posted while he was a member (his history) and nothing posted after his removal",
    )?;
    let envelopes = demo.cs_envelopes(&c.gid).await?;
    let last = envelopes.last().cloned().into_iter().collect::<Vec<_>>();
    let grants = demo.gms_grants().await?;
    let bobs = demo.keys_reaching(&c.bob, &c.gid, &grants).await?;
    let daves = candidate_keys(&c.gid, "project", &daves_r1s, &grants);
    demo.check(
        opened_with(&last, &bobs) == Some(1) && opened_with(&last, &daves) == Some(0),
        "the new message opens with bob's keys; dave with every key he can get after his removal, even given every RN2 by the GMS operator, cannot open it",
    )?;

    Ok(envelopes)
}

async fn a_late_joiner_reads_nothing_earlier(
    demo: &mut Demo,
    c: &mut Cast,
    envelopes: &[Vec<u8>],
) -> Result<()> {
    say("erin joins later");
    invite_and_join(&mut c.alice, &mut c.erin, &c.gid).await?;
    c.alice.send(&c.gid, "welcome erin").await?;
    let texts = read_texts(&mut c.erin, &c.gid).await?;
    demo.check(
        texts == ["welcome erin"],
        "erin reads what is sent after she joined, and nothing before",
    )?;
    let earlier = envelopes;
    let grants = demo.gms_grants().await?;
    let erins = demo.keys_reaching(&c.erin, &c.gid, &grants).await?;
    let alices = candidate_keys(&c.gid, "project", &c.alice.held_r1s(&c.gid).await?, &grants);
    demo.check(
        opened_with(earlier, &alices) == Some(earlier.len())
            && opened_with(earlier, &erins) == Some(0),
        "the history before erin joined opens with alice's keys; erin, even given every old RN2 by a dishonest GMS, opens none of it (the RN1 ratchet stops her)",
    )?;

    Ok(())
}

async fn the_gms_rotates_periodically(
    demo: &mut Demo,
    c: &mut Cast,
    node: &duokey_server::RunningNode,
) -> Result<()> {
    say("The GMS rotates RN2 periodically");
    let gms = node.gms.as_ref().ok_or(Error::Internal("gms"))?;
    let before_v = rn2_version(&c.alice, &c.gid).await?;
    gms.rotate_due(i64::try_from(duokey_terminal::now_ms()).unwrap_or(i64::MAX) + 2 * 3600 * 1000)
        .await;
    c.alice.sync().await?;
    c.alice.send(&c.gid, "new epoch, same conversation").await?;
    let after_v = rn2_version(&c.alice, &c.gid).await?;
    let mut all_read = true;
    for t in [&mut c.bob, &mut c.carol, &mut c.erin] {
        all_read &= read_texts(t, &c.gid).await?.last().map(String::as_str)
            == Some("new epoch, same conversation");
    }
    demo.check(
        after_v > before_v && all_read,
        "after the periodic rotation every member still reads, under a new epoch",
    )?;
    Ok(())
}

async fn print_history(t: &mut Terminal, gid: &GroupId) -> Result<()> {
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
