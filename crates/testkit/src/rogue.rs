//! A rogue CA operator (SPEC §7 P8, P10): it mints a certificate for a user
//! id with a key of its own, connects to the CS as that user (the CS
//! directory then shows the forged certificate) and publishes a delivery
//! key signed with the forged key. It reads that user's inbox and sends
//! anything in their name.

use crate::{LocalNet, now_ms};
use duokey_crypto::*;
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

impl LocalNet {
    /// The CA operator mints `user` with a key of its own (see [`Rogue`]).
    pub async fn rogue(&self, user: &str) -> Rogue {
        let ca = duokey_pki::Ca::load(&self.dir.path().join("srv/ca")).unwrap();
        let id = UserId::new(user).unwrap();
        let key = IdentityKey::generate();
        let cert = ca
            .sign_csr(&duokey_pki::make_csr(&key, &id).unwrap(), &id, 30)
            .unwrap();
        let tls = duokey_pki::client_config(
            &ca.cert_der(),
            Some((vec![cert], duokey_pki::identity_private_key_der(&key))),
        )
        .unwrap();
        let mut cs = CommunicationClient::new(
            duokey_pki::grpc::channel_any(self.client.cs_url.as_slice(), tls).unwrap(),
        );
        let delivery = DeliverySecret::generate();
        let record = DeliveryKeyRecord {
            user: id.clone(),
            key: delivery.public(),
            created_at_ms: now_ms(),
        }
        .sign(&key)
        .unwrap();
        cs.publish_delivery_key(duokey_proto::PublishDeliveryKeyRequest { record })
            .await
            .unwrap();
        Rogue {
            id,
            key,
            delivery,
            cs,
        }
    }
}

impl LocalNet {
    /// How many `rn1` items addressed to `user` that the CS holds open
    /// with `secret`: what reached the holder of that key.
    pub async fn rn1_opened_by(&self, user: &str, secret: &DeliverySecret) -> usize {
        let cs = self.cs_db().await;
        let items = cs.inbox_after(user, 0, 1000).await.unwrap();
        cs.close().await;
        items
            .iter()
            .filter_map(|e| SignedItem::parse(&e.item).ok())
            .filter(|s| {
                let ItemBody::Rn1(p) = &s.item.body else {
                    return false;
                };
                let ctx = Rn1Context {
                    group_id: &p.group_id,
                    sender: &s.item.sender,
                    recipient: &s.item.recipient,
                    ref_id: &p.ref_id,
                };
                rn1_delivery::open_rn1(secret, &ctx, p.rn1_version, p.at_rn2_version, &p.enc, &p.ct)
                    .is_ok()
            })
            .count()
    }
}

impl Rogue {
    /// Every item in the inbox of the user it poses as.
    pub async fn inbox(&mut self) -> Vec<Item> {
        let items = self
            .cs
            .items(duokey_proto::ItemsRequest {
                after_cursor: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        items
            .items
            .iter()
            .filter_map(|i| SignedItem::parse(&i.item).ok().map(|s| s.item))
            .collect()
    }

    /// Sends `body` to `to`, signed with the forged key.
    pub async fn send(&mut self, to: &UserId, body: ItemBody) {
        let item = Item {
            item_id: ItemId::random().unwrap(),
            sender: self.id.clone(),
            recipient: to.clone(),
            created_at_ms: now_ms(),
            body,
        };
        self.cs
            .send_item(duokey_proto::SendItemRequest {
                item: item.sign(&self.key).unwrap(),
            })
            .await
            .unwrap();
    }
}
