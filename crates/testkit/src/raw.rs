//! Raw users: enrolled through the real AS, with raw gRPC connections and
//! no terminal. Their identity keys derive from their names ([`test_key`]),
//! so a test can name the key of a member it adds (SPEC §4.7 `add`).

use crate::{LocalNet, Remote, now_ms};
use duokey_crypto::envelope::{self, Header};
use duokey_crypto::*;
use duokey_pki::grpc::channel;
use duokey_pki::{identity_private_key_der, make_csr};
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::communication_client::CommunicationClient;
use duokey_proto::group_management_client::GroupManagementClient;
use duokey_proto::membership_sync_client::MembershipSyncClient;
use duokey_proto::*;
use std::net::IpAddr;
use tonic::transport::Channel;

impl Remote {
    /// Enrols `user` through the AS and connects it to the GMS and CS.
    pub async fn raw(&self, user: &str) -> RawUser {
        let token = self.token(user).await;
        self.raw_with(user, &token, None).await.unwrap()
    }

    /// Enrols `user` with `token`, connecting to the AS from `local`.
    pub async fn raw_with(
        &self,
        user: &str,
        token: &str,
        local: Option<IpAddr>,
    ) -> Result<RawUser, tonic::Status> {
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

    /// A raw user of `id` with key `key` and certificate chain `chain` (any
    /// chain: tests present forged or expired ones), connected to the GMS and CS.
    pub fn user_with_chain(
        &self,
        id: UserId,
        key: IdentityKey,
        chain: Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>>,
    ) -> RawUser {
        let tls = self.tls_as(&key, chain.clone());
        RawUser {
            id,
            gms: GroupManagementClient::new(channel(&self.gms_url(), tls.clone()).unwrap()),
            cs: CommunicationClient::new(channel(&self.cs_url(), tls.clone()).unwrap()),
            sync: MembershipSyncClient::new(channel(&self.cs_url(), tls).unwrap()),
            key,
            chain,
            seq: 0,
        }
    }

    /// A TLS client configuration presenting `chain` with `key`, trusting
    /// the net's CA: for tests that speak to a port below gRPC.
    pub fn tls_as(
        &self,
        key: &IdentityKey,
        chain: Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>>,
    ) -> std::sync::Arc<duokey_pki::rustls::ClientConfig> {
        duokey_pki::client_config(
            &self.ca.cert_der(),
            Some((chain, identity_private_key_der(key))),
        )
        .unwrap()
    }

    /// alice and bob, raw, in a group "proj" that alice created and added bob
    /// to with `rights`; the grant that added bob.
    pub async fn raw_group_of_two(&self, rights: u32) -> (RawUser, RawUser, Grant) {
        let mut alice = self.raw("alice").await;
        let bob = self.raw("bob").await;
        let g = alice.create_group("proj").await;
        let g = alice.add(&g, "bob", rights).await.unwrap();
        (alice, bob, g)
    }

    /// The same user, connected to the current addresses.
    pub fn reconnect_user(&self, u: RawUser) -> RawUser {
        let mut fresh = self.user_with_chain(u.id, u.key, u.chain);
        fresh.seq = u.seq;
        fresh
    }
}

/// An enrolled identity with raw gRPC connections to the GMS and the CS and
/// no terminal: for tests of the servers' rules, and for attackers who may
/// send anything (SPEC §7).
pub struct RawUser {
    /// Its user id.
    pub id: UserId,
    /// Its identity key ([`test_key`] of its name unless chosen).
    pub key: IdentityKey,
    /// Its certificate chain.
    pub chain: Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>>,
    /// Its GMS connection.
    pub gms: GroupManagementClient<Channel>,
    /// Its CS connection.
    pub cs: CommunicationClient<Channel>,
    /// The CS's GMS-only service, called as this user (who must be refused).
    pub sync: MembershipSyncClient<Channel>,
    /// The `seq` of its next envelope.
    pub seq: u64,
}

/// Every test user's identity key, derived from its name, so that a test can
/// name the key of a member it adds (SPEC §4.7 `add` carries it).
pub fn test_key(user: &str) -> IdentityKey {
    use sha2::Digest;
    IdentityKey::from_seed(sha2::Sha256::digest(format!("duokey test key {user}")).into())
}

impl RawUser {
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
        self.create_change_of(GroupId::random().unwrap(), name)
    }

    /// A signed `create` of group `gid` named `name` (default policy).
    pub fn create_change_of(&self, gid: GroupId, name: &str) -> Vec<u8> {
        membership::create_change(
            gid,
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

    /// Creates a group named `name` (default policy); its first grant.
    pub async fn create_group(&mut self, name: &str) -> Grant {
        self.create_group_of(GroupId::random().unwrap(), name).await
    }

    /// Creates group `gid` named `name` (default policy); its first grant.
    pub async fn create_group_of(&mut self, gid: GroupId, name: &str) -> Grant {
        let change = self.create_change_of(gid, name);
        self.create_with(change).await.unwrap()
    }

    /// `CreateGroup` of a new group named `name`, which the GMS may refuse.
    pub async fn try_create_group(&mut self, name: &str) -> Result<Grant, tonic::Status> {
        let change = self.create_change(name);
        self.create_with(change).await
    }

    /// `CreateGroup` with a signed `create` change.
    async fn create_with(&mut self, change: Vec<u8>) -> Result<Grant, tonic::Status> {
        self.gms
            .create_group(CreateGroupRequest { change })
            .await
            .map(|r| r.into_inner())
    }

    /// Adds `user` (with [`test_key`]) with `rights` by a signed change.
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
                u8::try_from(rights).expect("rights fit in a byte"),
                key,
            )
            .await;
        self.report(&grant.group_id, change).await
    }

    /// Removes `user` by a signed change.
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

    /// A change of `action` on itself (a leave, a delete), signed.
    async fn own_change(&mut self, gid: &[u8], action: membership::Action) -> Vec<u8> {
        let me = self.id.to_string();
        self.sign(gid, action, &me, 0, Vec::new()).await
    }

    /// `Leave` with a signed change.
    pub async fn leave(&mut self, gid: &[u8]) -> Result<LeaveResponse, tonic::Status> {
        let change = self.own_change(gid, membership::Action::Leave).await;
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
        let change = self.own_change(gid, membership::Action::Delete).await;
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
        self.envelope_at(gid, text, Epoch::new(1, 1))
    }

    /// [`RawUser::envelope`], naming `epoch`.
    pub fn envelope_at(&mut self, gid: &[u8], text: &str, epoch: Epoch) -> Vec<u8> {
        let header = Header {
            group_id: GroupId::from_slice(gid).unwrap(),
            epoch,
            sender: self.id.clone(),
            seq: self.seq,
            sent_at_ms: now_ms(),
            msg_id: MsgId::random().unwrap(),
        };
        self.seq += 1;
        let sk = SenderKey::derive(&GroupKey::from_bytes([7; 32]), &self.id).unwrap();
        envelope::seal(&self.key, &sk, &header, ContentType::Text, text.as_bytes()).unwrap()
    }

    /// Posts an envelope of `text` ([`RawUser::envelope`]); its log position.
    pub async fn post(&mut self, gid: &[u8], text: &str) -> Result<u64, tonic::Status> {
        let envelope = self.envelope(gid, text);
        self.post_envelope(gid, envelope).await
    }

    /// Posts `envelope` (made by anyone) to `gid`; its log position.
    pub async fn post_envelope(
        &mut self,
        gid: &[u8],
        envelope: Vec<u8>,
    ) -> Result<u64, tonic::Status> {
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

    /// The log positions of the group's envelopes this user can fetch.
    pub async fn log_positions(&mut self, gid: &[u8]) -> Vec<u64> {
        let logged = self.fetch(gid, 0).await.expect("fetch");
        logged.iter().map(|e| e.log_seq).collect()
    }

    /// Opens this user's live stream of deliveries (`Subscribe`).
    pub async fn subscribe(&mut self) -> tonic::Streaming<Delivery> {
        self.cs
            .subscribe(SubscribeRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Opens this user's live stream of grants and removals (`Watch`).
    pub async fn watch(&mut self) -> tonic::Streaming<WatchEvent> {
        self.gms.watch(WatchRequest {}).await.unwrap().into_inner()
    }

    /// `GetGrants` for `group_ids` (every group of this user when empty).
    pub async fn grants(&mut self, group_ids: Vec<Vec<u8>>) -> GetGrantsResponse {
        self.gms
            .get_grants(GetGrantsRequest { group_ids })
            .await
            .unwrap()
            .into_inner()
    }

    /// `GetGrant`: the grant of RN2 version `rn2_version` of `gid`.
    pub async fn grant(&mut self, gid: &[u8], rn2_version: u64) -> Result<Grant, tonic::Status> {
        self.gms
            .get_grant(GetGrantRequest {
                group_id: gid.to_vec(),
                rn2_version,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `Rotate` of `gid` with a signed `change` (empty: a periodic-style rotation).
    pub async fn rotate(&mut self, gid: &[u8], change: Vec<u8>) -> Result<Grant, tonic::Status> {
        self.gms
            .rotate(RotateRequest {
                group_id: gid.to_vec(),
                report_id: ItemId::random().unwrap().0.to_vec(),
                change,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The group's envelopes after log position `after`.
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

impl RawUser {
    /// Sends `to` an `rn1` rotation item of `rn1_version` at `at_rn2_version`
    /// holding a fresh R1 of the attacker's choosing, sealed to `to`'s
    /// published delivery key (so only the receiver's rules can stop it).
    pub async fn send_rotation(
        &mut self,
        to: &str,
        gid: &GroupId,
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
        let group = *gid;
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
            created_at_ms: now_ms(),
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
    pub async fn accept_invitation(&mut self, gid: &GroupId) {
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
            .find(|i| matches!(i.body, ItemBody::Invite { group_id, .. } if group_id == *gid))
            .expect("an invitation");
        let ack = Item {
            item_id: ItemId::random().unwrap(),
            sender: self.id.clone(),
            recipient: invite.sender.clone(),
            created_at_ms: now_ms(),
            body: ItemBody::Ack {
                invite_id: invite.item_id,
                group_id: *gid,
                invite_pub: DeliverySecret::generate().public(),
            },
        };
        self.send(ack).await;
    }

    /// Signs a `rotate_rn1` on top of the group's chain and sends it.
    pub async fn rotate_rn1(&mut self, gid: &GroupId) -> duokey_proto::Grant {
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
                now_ms(),
            )
            .sign(&self.key)
            .unwrap();
        self.rotate(gid.as_slice(), change.as_bytes().to_vec())
            .await
            .unwrap()
    }
}

impl LocalNet {
    /// An enrolled raw user who has published a delivery key, as a
    /// terminal does at enrolment: an attacker that members' terminals can
    /// invite and send RN1 to, and that may send anything.
    pub async fn attacker(&self, name: &str) -> RawUser {
        let mut user = self.raw(name).await;
        let record = DeliveryKeyRecord {
            user: user.id.clone(),
            key: DeliverySecret::generate().public(),
            created_at_ms: now_ms(),
        }
        .sign(&user.key)
        .unwrap();
        user.cs
            .publish_delivery_key(PublishDeliveryKeyRequest { record })
            .await
            .unwrap();
        user
    }
}
