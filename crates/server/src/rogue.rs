//! What a rogue CA operator can do with the CA's key (SPEC §7 P8, P10), for
//! `duokey demo` and the tests that play the attack: mint a certificate for
//! any user id with a key of its own, connect to the CS as that user (the
//! CS directory then shows the forged certificate), publish a delivery key
//! signed with the forged key, read that user's inbox and send anything in
//! their name. Nothing here is used by the servers.

use crate::Error;
use duokey_crypto::*;
use duokey_pki::Ca;
use duokey_proto::communication_client::CommunicationClient;
use tonic::transport::Channel;

/// What the rogue holds.
pub struct Rogue {
    /// The user id it poses as.
    pub id: UserId,
    /// Its identity key, certified by the CA for `id`.
    pub key: IdentityKey,
    /// Its delivery key, published for `id`.
    pub delivery: DeliverySecret,
    /// Its CS connection as `id`.
    pub cs: CommunicationClient<Channel>,
}

fn status(what: &'static str) -> impl Fn(tonic::Status) -> Error {
    move |s| Error::Usage(format!("{what}: {s}"))
}

impl Rogue {
    /// Mints `user` with a fresh key and the CA's key, and connects to the
    /// CS at `cs_urls` as that user.
    pub async fn mint(ca: &Ca, cs_urls: &[String], user: &UserId) -> Result<Rogue, Error> {
        let key = IdentityKey::generate();
        let cert = ca.sign_csr(&duokey_pki::make_csr(&key, user)?, user, 30)?;
        let tls = duokey_pki::client_config(
            &ca.cert_der(),
            Some((vec![cert], duokey_pki::identity_private_key_der(&key))),
        )?;
        let channel = duokey_pki::grpc::channel_any(cs_urls, tls).map_err(status("connecting"))?;
        let mut cs = CommunicationClient::new(channel);
        let delivery = DeliverySecret::generate();
        let record = DeliveryKeyRecord {
            user: user.clone(),
            key: delivery.public(),
            created_at_ms: duokey_pki::clock::now_ms(),
        }
        .sign(&key)
        .map_err(|e| Error::Usage(e.to_string()))?;
        cs.publish_delivery_key(duokey_proto::PublishDeliveryKeyRequest { record })
            .await
            .map_err(status("publishing a delivery key"))?;
        Ok(Rogue {
            id: user.clone(),
            key,
            delivery,
            cs,
        })
    }

    /// Every item in the inbox of the user it poses as.
    pub async fn inbox(&mut self) -> Result<Vec<Item>, Error> {
        let items = self
            .cs
            .items(duokey_proto::ItemsRequest {
                after_cursor: 0,
                limit: 0,
            })
            .await
            .map_err(status("reading the inbox"))?
            .into_inner();
        Ok(items
            .items
            .iter()
            .filter_map(|i| SignedItem::parse(&i.item).ok().map(|s| s.item))
            .collect())
    }

    /// Sends `body` to `to`, signed with the forged key.
    pub async fn send(&mut self, to: &UserId, body: ItemBody) -> Result<(), Error> {
        let item = Item {
            item_id: ItemId::random().map_err(|e| Error::Usage(e.to_string()))?,
            sender: self.id.clone(),
            recipient: to.clone(),
            created_at_ms: duokey_pki::clock::now_ms(),
            body,
        }
        .sign(&self.key)
        .map_err(|e| Error::Usage(e.to_string()))?;
        self.cs
            .send_item(duokey_proto::SendItemRequest { item })
            .await
            .map_err(status("sending an item"))?;
        Ok(())
    }

    /// Answers the code invitation to `gid` in its inbox, from `inviter`
    /// (whose key is `inviter_key`), with `guess` as the code and
    /// `secret`'s public key as `invite_pub` (PROTOCOL §4.10): what an
    /// attacker who does not know the code can do.
    pub async fn answer_code_invitation(
        &mut self,
        inviter: &UserId,
        inviter_key: &PublicIdentity,
        gid: &GroupId,
        guess: &invite_code::InviteCode,
        secret: &DeliverySecret,
    ) -> Result<(), Error> {
        let invite = self
            .inbox()
            .await?
            .into_iter()
            .find(|i| matches!(i.body, ItemBody::CodeInvite { group_id, .. } if group_id == *gid))
            .ok_or_else(|| Error::Usage("no code invitation reached the rogue".into()))?;
        let ItemBody::CodeInvite { msg_a, .. } = invite.body else {
            return Err(Error::Usage("not a code invitation".into()));
        };
        let ctx = invite_code::CodeContext {
            invite_id: &invite.item_id,
            group_id: gid,
            inviter,
            invitee: &self.id,
        };
        let (me, invite_pub) = (self.key.public(), secret.public());
        let keys = invite_code::CodeKeys {
            inviter: inviter_key,
            invitee: &me,
            invite_pub: &invite_pub,
        };
        let answer = invite_code::invitee_answer(guess, &ctx, &msg_a, &keys)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let body = ItemBody::CodeAck(CodeAckPayload {
            invite_id: invite.item_id,
            group_id: *gid,
            invite_pub,
            msg_b: answer.msg_b,
            tag: answer.tag,
        });
        self.send(inviter, body).await
    }

    /// How many of `items` (the inbox of the user it poses as) are `rn1`
    /// items that open with `secret`: what RN1 reached it.
    pub fn rn1_opened(items: &[Item], secret: &DeliverySecret) -> usize {
        items
            .iter()
            .filter(|i| {
                let ItemBody::Rn1(p) = &i.body else {
                    return false;
                };
                let ctx = Rn1Context {
                    group_id: &p.group_id,
                    sender: &i.sender,
                    recipient: &i.recipient,
                    ref_id: &p.ref_id,
                };
                rn1_delivery::open_rn1(secret, &ctx, p.rn1_version, p.at_rn2_version, &p.enc, &p.ct)
                    .is_ok()
            })
            .count()
    }
}
