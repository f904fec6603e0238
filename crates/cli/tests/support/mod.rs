//! The real `duokey-server dev` and `duokey` binaries in a temporary directory.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

pub mod lying;

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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        let u = User {
            home: self.dir.path().join(name),
            passphrase: format!("{name}'s long passphrase"),
        };
        let token = self.token(name);
        let out = u.run(&[
            "init",
            "--user",
            name,
            "--token",
            &token,
            "--config",
            self.client_toml().to_str().unwrap(),
        ]);
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
        Command::new(bin("duokey"))
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .env("DUOKEY_PASSPHRASE", passphrase)
            .env_remove("DUOKEY_KEYLOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a command with `input` on its standard input.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new(bin("duokey"))
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .env("DUOKEY_PASSPHRASE", &self.passphrase)
            .env_remove("DUOKEY_KEYLOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that the crash-injection point `point` kills (a
    /// debug build aborts there, as `kill -9` would; issue 14 point 9).
    pub fn killed_at(&self, point: &str, args: &[&str]) {
        use std::os::unix::process::ExitStatusExt;
        let out = Command::new(bin("duokey"))
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .env("DUOKEY_PASSPHRASE", &self.passphrase)
            .env("DUOKEY_FAILPOINT", point)
            .env_remove("DUOKEY_KEYLOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(6),
            "duokey {args:?} should have been killed at {point}: {out:?}"
        );
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
    let v: serde_json::Value =
        serde_json::from_str(&owner.ok(&["--json", "group", "create", name])).unwrap();
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

/// The servers in this process (for tests that drive the terminal library and
/// read the servers' databases as an attacker would).
pub struct InProcess {
    pub dir: tempfile::TempDir,
    pub node: duokey_server::RunningNode,
    pub cfg: duokey_terminal::ClientConfig,
}

impl InProcess {
    pub async fn start() -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let srv = dir.path().join("srv");
        let scfg = duokey_server::dev::prepare(&srv, "127.0.0.1:0", "127.0.0.1:0").unwrap();
        let node = duokey_server::Node::start(&scfg).await.unwrap();
        let client = duokey_server::dev::write_client_file(
            &srv,
            node.gms_addr.unwrap(),
            node.cs_addr.unwrap(),
        )
        .unwrap();
        let cfg = duokey_terminal::ClientConfig::load(&client).unwrap();
        InProcess { dir, node, cfg }
    }

    /// Enrols `name` with a profile of its own (no passphrase).
    pub async fn user(&self, name: &str) -> duokey_terminal::Terminal {
        self.user_via(name, &self.cfg).await
    }

    /// Enrols `name` with a profile that talks to the servers `cfg` names.
    pub async fn user_via(
        &self,
        name: &str,
        cfg: &duokey_terminal::ClientConfig,
    ) -> duokey_terminal::Terminal {
        let db = self.db("as").await;
        let id = duokey_crypto::UserId::new(name).unwrap();
        let token = duokey_accounts::issue_token(&db, &id).await.unwrap();
        db.close().await;
        duokey_terminal::Terminal::init(&self.dir.path().join(name), &id, &token, cfg, None)
            .await
            .unwrap()
    }

    /// The real GMS behind a lying wrapper on a port of its own, and the
    /// client configuration that reaches it (SPEC §7 P9).
    pub async fn lying_gms(&self) -> (duokey_terminal::ClientConfig, lying::Lies) {
        let lies = lying::Lies::default();
        let gms = self.node.gms.clone().unwrap();
        let addr = lying::serve(gms, &self.dir.path().join("srv"), lies.clone()).await;
        let mut cfg = self.cfg.clone();
        cfg.gms_url = format!("https://{addr}");
        (cfg, lies)
    }

    /// Every R1 of `gid` that `t`'s user can get hold of now: what its
    /// terminal holds, plus every `rn1` item for it the CS keeps, opened with
    /// its delivery key (an attacker's program would not drop one). Taken
    /// after a removal, this sees a new RN1 wrongly sent to the removed
    /// member, which keys captured before it would not.
    pub async fn r1s_reaching(
        &self,
        t: &duokey_terminal::Terminal,
        gid: &[u8; 16],
    ) -> Vec<(u32, duokey_crypto::R1)> {
        let cs = self.db("cs").await;
        let inbox = cs.inbox_after(t.user().as_str(), 0, 10_000).await.unwrap();
        cs.close().await;
        let items: Vec<Vec<u8>> = inbox.into_iter().map(|e| e.item).collect();
        let mut out = t.held_r1s(gid).await.unwrap();
        out.extend(t.r1s_in(gid, &items));
        out
    }

    /// A second GMS over a copy of the real one's database as it is now: an
    /// operator who forks the group's history to show some members another
    /// one (SPEC §4.7 "Equivocation"; see `lying::Lies::fork_to`).
    pub async fn forked_gms(&self) -> duokey_gms::Gms {
        let srv = self.dir.path().join("srv");
        let copy = srv.join("gms-fork.db");
        let live = sqlx::SqlitePool::connect(&format!("sqlite://{}", srv.join("gms.db").display()))
            .await
            .unwrap();
        sqlx::query("VACUUM INTO ?")
            .bind(copy.display().to_string())
            .execute(&live)
            .await
            .unwrap();
        live.close().await;
        let db = duokey_storage::Db::open_sqlite(&copy).await.unwrap();
        duokey_gms::Gms::new(db, duokey_gms::GmsConfig::default())
    }

    /// How many `rn1` items the CS holds for `user` (who never syncs in the
    /// attack tests): what reached the attacker.
    pub async fn rn1_items_to(&self, user: &str) -> i64 {
        use sqlx::Row;
        let path = self.dir.path().join("srv/cs.db");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
            .await
            .unwrap();
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM cs_inbox WHERE recipient = ? AND kind = 4")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        pool.close().await;
        n
    }

    /// An enrolled user with its own key and a raw CS connection, no
    /// terminal: an attacker who may send anything.
    pub async fn raw_user(&self, name: &str) -> RawUser {
        use duokey_proto::accounts_client::AccountsClient;
        use duokey_proto::communication_client::CommunicationClient;
        let db = self.db("as").await;
        let id = duokey_crypto::UserId::new(name).unwrap();
        let token = duokey_accounts::issue_token(&db, &id).await.unwrap();
        db.close().await;
        let key = duokey_crypto::IdentityKey::generate();
        let ca = duokey_pki::pem::first_cert_from_pem(&self.cfg.ca_cert).unwrap();
        let anon = duokey_pki::client_config(&ca, None).unwrap();
        let resp = AccountsClient::new(duokey_pki::grpc::channel(&self.cfg.as_url, anon).unwrap())
            .enroll(duokey_proto::EnrollRequest {
                token: token.to_string(),
                csr_der: duokey_pki::make_csr(&key, &id).unwrap(),
            })
            .await
            .unwrap()
            .into_inner();
        let chain = resp.cert_chain_der.into_iter().map(Into::into).collect();
        let tls = duokey_pki::client_config(
            &ca,
            Some((chain, duokey_pki::identity_private_key_der(&key))),
        )
        .unwrap();
        let mut cs = CommunicationClient::new(
            duokey_pki::grpc::channel(&self.cfg.cs_url, tls.clone()).unwrap(),
        );
        // As a terminal does at enrolment: it is in the directory from now on.
        let record = duokey_crypto::DeliveryKeyRecord {
            user: id.clone(),
            key: duokey_crypto::DeliverySecret::generate().public(),
            created_at_ms: duokey_terminal::now_ms(),
        }
        .sign(&key)
        .unwrap();
        cs.publish_delivery_key(duokey_proto::PublishDeliveryKeyRequest { record })
            .await
            .unwrap();
        RawUser {
            id,
            key,
            cs,
            gms: duokey_proto::group_management_client::GroupManagementClient::new(
                duokey_pki::grpc::channel(&self.cfg.gms_url, tls).unwrap(),
            ),
        }
    }

    /// A server role's database, as its operator sees it.
    pub async fn db(&self, role: &str) -> duokey_storage::Db {
        duokey_storage::Db::open_sqlite(&self.dir.path().join(format!("srv/{role}.db")))
            .await
            .unwrap()
    }
}

/// An attacker: an enrolled identity and a raw CS connection.
pub struct RawUser {
    pub id: duokey_crypto::UserId,
    pub key: duokey_crypto::IdentityKey,
    pub cs: duokey_proto::communication_client::CommunicationClient<tonic::transport::Channel>,
    pub gms:
        duokey_proto::group_management_client::GroupManagementClient<tonic::transport::Channel>,
}

impl RawUser {
    /// Sends `to` an `rn1` rotation item of `rn1_version` at `at_rn2_version`
    /// holding a fresh R1 of the attacker's choosing, sealed to `to`'s
    /// published delivery key (so only the receiver's rules can stop it).
    pub async fn send_rotation(
        &mut self,
        to: &str,
        gid: &[u8; 16],
        rn1_version: u32,
        at_rn2_version: u64,
    ) -> [u8; 32] {
        use duokey_crypto::*;
        let to = UserId::new(to).unwrap();
        let user = self
            .cs
            .get_user(duokey_proto::GetUserRequest {
                user_id: to.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let leaf = duokey_pki::peer_identity(&user.cert_chain_der[0]).unwrap();
        let their_key = PublicIdentity::from_bytes(&leaf.ed25519_public.unwrap()).unwrap();
        let record = DeliveryKeyRecord::verify(&user.delivery_key_record, &their_key).unwrap();
        let item_id = ItemId::random().unwrap();
        let group = GroupId(*gid);
        let ctx = rn1_delivery::Rn1Context {
            group_id: &group,
            sender: &self.id,
            recipient: &to,
            ref_id: &item_id,
        };
        let r1 = R1::from_rn1(&Rn1::random().unwrap(), at_rn2_version);
        let (enc, ct) = rn1_delivery::seal_rn1(&record.key, &ctx, rn1_version, &r1).unwrap();
        let item = Item {
            item_id,
            sender: self.id.clone(),
            recipient: to,
            created_at_ms: duokey_terminal::now_ms(),
            body: ItemBody::Rn1(Rn1Payload {
                ref_id: item_id,
                group_id: group,
                rn1_version,
                at_rn2_version,
                enc,
                ct,
            }),
        };
        self.send(item).await;
        *r1.expose_secret()
    }

    /// Signs and sends `item`.
    pub async fn send(&mut self, item: duokey_crypto::Item) {
        self.cs
            .send_item(duokey_proto::SendItemRequest {
                item: item.sign(&self.key).unwrap(),
            })
            .await
            .unwrap();
    }

    /// Joins `gid` by accepting the pending invitation in its inbox: an
    /// `ack` with a fresh invitation key (what an invitee's terminal sends).
    pub async fn accept_invitation(&mut self, gid: &[u8; 16]) {
        use duokey_crypto::*;
        let inbox = self
            .cs
            .items(duokey_proto::ItemsRequest {
                after_cursor: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let invite = inbox
            .items
            .iter()
            .filter_map(|i| SignedItem::parse(&i.item).ok().map(|s| s.item))
            .find(|i| matches!(i.body, ItemBody::Invite { group_id, .. } if group_id.0 == *gid))
            .expect("an invitation");
        let ack = Item {
            item_id: ItemId::random().unwrap(),
            sender: self.id.clone(),
            recipient: invite.sender.clone(),
            created_at_ms: duokey_terminal::now_ms(),
            body: ItemBody::Ack {
                invite_id: invite.item_id,
                group_id: GroupId(*gid),
                invite_pub: DeliverySecret::generate().public(),
            },
        };
        self.send(ack).await;
    }

    /// Signs a `rotate_rn1` on top of the group's chain and sends it.
    pub async fn rotate_rn1(&mut self, gid: &[u8; 16]) -> duokey_proto::Grant {
        use duokey_crypto::membership;
        let changes = self
            .gms
            .get_changes(duokey_proto::GetChangesRequest {
                group_id: gid.to_vec(),
                after_seq: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut state: Option<membership::State> = None;
        for c in &changes.changes {
            let c = membership::SignedChange::parse(&c.change).unwrap();
            state = Some(membership::apply(state.as_ref(), &c).unwrap());
        }
        let change = state
            .unwrap()
            .next_change(
                membership::Action::RotateRn1,
                &self.id,
                &self.id,
                duokey_crypto::Rights::NONE,
                Vec::new(),
                duokey_terminal::now_ms(),
            )
            .sign(&self.key)
            .unwrap();
        self.gms
            .rotate(duokey_proto::RotateRequest {
                group_id: gid.to_vec(),
                report_id: duokey_crypto::ItemId::random().unwrap().0.to_vec(),
                change: change.as_bytes().to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

/// Invites `other` into `gid` and completes the join on both terminals.
pub async fn join(
    owner: &mut duokey_terminal::Terminal,
    other: &mut duokey_terminal::Terminal,
    gid: &[u8; 16],
) {
    owner
        .invite(gid, other.user(), duokey_crypto::Rights::NONE)
        .await
        .unwrap();
    other.sync().await.unwrap();
    other.accept(&hex::encode(gid)).await.unwrap();
    owner.sync().await.unwrap();
    other.sync().await.unwrap();
}

/// The message texts `t` shows for the group.
pub async fn texts(t: &duokey_terminal::Terminal, gid: &[u8; 16]) -> Vec<String> {
    t.history(gid)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| match l {
            duokey_terminal::Line::Message(m) => Some(m.text),
            duokey_terminal::Line::Notice(_) => None,
        })
        .collect()
}
