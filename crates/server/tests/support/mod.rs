//! Real servers on 127.0.0.1 with real TLS and SQLite, and enrolled users.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use duokey_crypto::envelope::{self, Header};
use duokey_crypto::*;
use duokey_pki::grpc::{channel, channel_from};
use duokey_pki::{Ca, identity_private_key_der, make_csr};
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::communication_client::CommunicationClient;
use duokey_proto::group_management_client::GroupManagementClient;
use duokey_proto::*;
use duokey_server::config::ServerConfig;
use duokey_server::{Node, RunningNode, dev};
use duokey_storage::Db;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

pub struct TestNet {
    pub dir: tempfile::TempDir,
    pub cfg: ServerConfig,
    pub node: RunningNode,
    pub remote: Remote,
}

/// How to reach servers and enrol users: in this process or another.
pub struct Remote {
    pub dir: PathBuf,
    pub gms_url: String,
    pub cs_url: String,
    pub ca: Ca,
    /// Where the AS keeps its tokens (SQLite in the data directory unless
    /// the test chose another database).
    pub as_db_url: String,
}

pub use duokey_pki::clock::now_ms;

impl std::ops::Deref for TestNet {
    type Target = Remote;
    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl TestNet {
    pub async fn start() -> TestNet {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut ServerConfig)) -> TestNet {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = dev::prepare(dir.path(), "127.0.0.1:0", "127.0.0.1:0").unwrap();
        cfg.limits.min_rotate_every_secs = 1;
        edit(&mut cfg);
        let node = Node::start(&cfg).await.unwrap();
        let (gms, cs) = (
            node.gms_addr.unwrap().to_string(),
            node.cs_addr.unwrap().to_string(),
        );
        let mut remote = Remote::new(dir.path(), &gms, &cs);
        if let Some(url) = &cfg.database.as_url {
            remote.as_db_url = cfg.db_url(url);
        }
        TestNet {
            dir,
            cfg,
            node,
            remote,
        }
    }

    /// Stops the servers and starts them again on the same configuration
    /// and databases (on new ports; `reconnect_user` follows them).
    #[allow(dead_code)]
    pub async fn restart(self) -> TestNet {
        let TestNet {
            dir,
            cfg,
            node,
            mut remote,
        } = self;
        node.shutdown().await;
        let node = Node::start(&cfg).await.unwrap();
        remote.reconnect(
            &node.gms_addr.unwrap().to_string(),
            &node.cs_addr.unwrap().to_string(),
        );
        TestNet {
            dir,
            cfg,
            node,
            remote,
        }
    }

    pub async fn cs_caught_up(&self) {
        let gms = self.node.gms.as_ref().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(20), gms.cs_caught_up())
            .await
            .expect("CS sync");
    }
}

impl Remote {
    pub fn new(dir: &Path, gms: &str, cs: &str) -> Remote {
        Remote {
            dir: dir.to_owned(),
            gms_url: format!("https://{gms}"),
            cs_url: format!("https://{cs}"),
            ca: Ca::load(&dir.join("ca")).unwrap(),
            as_db_url: format!("sqlite://{}", dir.join("as.db").display()),
        }
    }

    pub fn reconnect(&mut self, gms: &str, cs: &str) {
        self.gms_url = format!("https://{gms}");
        self.cs_url = format!("https://{cs}");
    }

    pub fn gms_url(&self) -> String {
        self.gms_url.clone()
    }

    pub fn cs_url(&self) -> String {
        self.cs_url.clone()
    }

    /// A one-time token, from the AS database of the data directory.
    pub async fn token(&self, user: &str) -> String {
        let db = Db::open(&self.as_db_url).await.unwrap();
        let token = duokey_accounts::issue_token(&db, &UserId::new(user).unwrap())
            .await
            .unwrap();
        db.close().await;
        token.to_string()
    }

    /// An anonymous (no client certificate) channel.
    pub fn anonymous(&self, url: &str) -> Channel {
        self.anonymous_from(url, None)
    }

    /// An anonymous channel whose connections leave from `local`.
    pub fn anonymous_from(&self, url: &str, local: Option<IpAddr>) -> Channel {
        channel_from(
            url,
            duokey_pki::client_config(&self.ca.cert_der(), None).unwrap(),
            local,
        )
        .unwrap()
    }

    /// Enrols `user` through the AS and connects it to the GMS and CS.
    pub async fn enroll(&self, user: &str) -> TestUser {
        let token = self.token(user).await;
        self.enroll_with(user, &token, None).await.unwrap()
    }

    /// Enrols `user` with `token`, connecting to the AS from `local`.
    pub async fn enroll_with(
        &self,
        user: &str,
        token: &str,
        local: Option<IpAddr>,
    ) -> Result<TestUser, tonic::Status> {
        let id = UserId::new(user).unwrap();
        let key = test_key(user);
        let mut accounts = AccountsClient::new(self.anonymous_from(&self.gms_url(), local));
        let resp = accounts
            .enroll(EnrollRequest {
                token: token.to_owned(),
                csr_der: make_csr(&key, &id).unwrap(),
            })
            .await?
            .into_inner();
        let chain = resp
            .cert_chain_der
            .iter()
            .map(|c| c.clone().into())
            .collect();
        let mut user = self.user_with_chain(id, key, chain);
        // As a terminal's `init` does (it publishes its delivery key): the
        // CS's directory knows the user from then on, so items reach it.
        user.cs
            .get_user(GetUserRequest {
                user_id: user.id.to_string(),
            })
            .await?;
        Ok(user)
    }

    pub fn user_with_chain(
        &self,
        id: UserId,
        key: IdentityKey,
        chain: Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>>,
    ) -> TestUser {
        let tls = duokey_pki::client_config(
            &self.ca.cert_der(),
            Some((chain.clone(), identity_private_key_der(&key))),
        )
        .unwrap();
        TestUser {
            id,
            gms: GroupManagementClient::new(channel(&self.gms_url(), tls.clone()).unwrap()),
            cs: CommunicationClient::new(channel(&self.cs_url(), tls).unwrap()),
            key,
            chain,
            seq: 0,
        }
    }

    /// The same user, connected to the current addresses.
    pub fn reconnect_user(&self, u: TestUser) -> TestUser {
        let mut fresh = self.user_with_chain(u.id, u.key, u.chain);
        fresh.seq = u.seq;
        fresh
    }
}

pub struct TestUser {
    pub id: UserId,
    pub key: IdentityKey,
    pub chain: Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>>,
    pub gms: GroupManagementClient<Channel>,
    pub cs: CommunicationClient<Channel>,
    pub seq: u64,
}

/// Every test user's identity key, derived from its name, so that a test can
/// name the key of a member it adds (SPEC §4.7 `add` carries it).
pub fn test_key(user: &str) -> IdentityKey {
    use sha2::Digest;
    IdentityKey::from_seed(sha2::Sha256::digest(format!("duokey test key {user}")).into())
}

impl TestUser {
    /// The group's membership state, verified from the GMS's chain as a
    /// terminal would; `None` if the GMS does not serve it to this user.
    pub async fn chain(&mut self, gid: &[u8]) -> Option<membership::State> {
        let mut state: Option<membership::State> = None;
        loop {
            let after = state.as_ref().map_or(0, |s| s.seq);
            let page = self
                .gms
                .get_changes(GetChangesRequest {
                    group_id: gid.to_vec(),
                    after_seq: after,
                    limit: 0,
                })
                .await
                .ok()?
                .into_inner();
            for c in &page.changes {
                let c = membership::SignedChange::parse(&c.change).unwrap();
                state = Some(membership::apply(state.as_ref(), &c).unwrap());
            }
            if !page.more {
                return state;
            }
        }
    }

    /// This user's next signed change of `gid` on top of the GMS's chain.
    pub async fn sign(
        &mut self,
        gid: &[u8],
        action: membership::Action,
        subject: &str,
        rights: u8,
        body: Vec<u8>,
    ) -> Vec<u8> {
        let state = self.chain(gid).await.expect("the test user is a member");
        let change = state.next_change(
            action,
            &self.id,
            &UserId::new(subject).unwrap(),
            Rights::from_bits(rights).unwrap(),
            body,
            now_ms(),
        );
        change.sign(&self.key).unwrap().as_bytes().to_vec()
    }

    /// A signed `create` of a new group named `name` (default policy).
    pub fn create_change(&self, name: &str) -> Vec<u8> {
        membership::create_change(
            GroupId::random().unwrap(),
            &self.id,
            &self.key.public(),
            &GroupName::new(name).unwrap(),
            &membership::Policy::default(),
            now_ms(),
        )
        .unwrap()
        .sign(&self.key)
        .unwrap()
        .as_bytes()
        .to_vec()
    }

    pub async fn create_group(&mut self, name: &str) -> Grant {
        let change = self.create_change(name);
        self.gms
            .create_group(CreateGroupRequest { change })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn add(
        &mut self,
        grant: &Grant,
        user: &str,
        rights: u32,
    ) -> Result<Grant, tonic::Status> {
        let key = test_key(user).public().to_bytes().to_vec();
        let change = self
            .sign(
                &grant.group_id,
                membership::Action::Add,
                user,
                rights as u8,
                key,
            )
            .await;
        self.report(&grant.group_id, change).await
    }

    pub async fn remove(&mut self, grant: &Grant, user: &str) -> Result<Grant, tonic::Status> {
        let change = self
            .sign(
                &grant.group_id,
                membership::Action::Remove,
                user,
                0,
                Vec::new(),
            )
            .await;
        self.report(&grant.group_id, change).await
    }

    /// `ReportMember` with a signed change.
    pub async fn report(&mut self, gid: &[u8], change: Vec<u8>) -> Result<Grant, tonic::Status> {
        self.gms
            .report_member(ReportMemberRequest {
                group_id: gid.to_vec(),
                report_id: ItemId::random().unwrap().0.to_vec(),
                change,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `Leave` with a signed change.
    pub async fn leave(&mut self, gid: &[u8]) -> Result<LeaveResponse, tonic::Status> {
        let me = self.id.to_string();
        let change = self
            .sign(gid, membership::Action::Leave, &me, 0, Vec::new())
            .await;
        self.gms
            .leave(LeaveRequest {
                group_id: gid.to_vec(),
                change,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `Delete` with a signed change.
    pub async fn delete(&mut self, gid: &[u8]) -> Result<DeleteResponse, tonic::Status> {
        let me = self.id.to_string();
        let change = self
            .sign(gid, membership::Action::Delete, &me, 0, Vec::new())
            .await;
        self.gms
            .delete(DeleteRequest {
                group_id: gid.to_vec(),
                change,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// A real envelope of this user (the CS cannot tell the key is made up).
    pub fn envelope(&mut self, gid: &[u8], text: &str) -> Vec<u8> {
        let header = Header {
            group_id: GroupId::from_slice(gid).unwrap(),
            epoch: Epoch::new(1, 1),
            sender: self.id.clone(),
            seq: self.seq,
            sent_at_ms: now_ms(),
            msg_id: MsgId::random().unwrap(),
        };
        self.seq += 1;
        let sk = SenderKey::derive(&GroupKey::from_bytes([7; 32]), &self.id).unwrap();
        envelope::seal(&self.key, &sk, &header, ContentType::Text, text.as_bytes()).unwrap()
    }

    pub async fn post(&mut self, gid: &[u8], text: &str) -> Result<u64, tonic::Status> {
        let envelope = self.envelope(gid, text);
        self.cs
            .post(PostRequest {
                group_id: gid.to_vec(),
                envelope,
            })
            .await
            .map(|r| r.into_inner().log_seq)
    }

    /// Waits until the CS of another process knows this group: that process's
    /// GMS→CS sync cannot be observed from here, so this polls (bounded).
    pub async fn cs_ready(&mut self, gid: &[u8]) {
        for _ in 0..500 {
            if self.fetch(gid, 0).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the CS never learned the group");
    }

    pub async fn fetch(
        &mut self,
        gid: &[u8],
        after: u64,
    ) -> Result<Vec<LoggedEnvelope>, tonic::Status> {
        self.cs
            .fetch(FetchRequest {
                group_id: gid.to_vec(),
                after_seq: after,
                limit: 1000,
            })
            .await
            .map(|r| r.into_inner().envelopes)
    }
}

/// The next message of `stream`, bounded: a bug fails the test with what was
/// awaited instead of hanging it.
pub async fn next_within<S>(stream: &mut S, what: &str) -> S::Item
where
    S: tokio_stream::Stream + Unpin,
{
    use tokio_stream::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
        .unwrap_or_else(|| panic!("the stream ended before {what}"))
}
