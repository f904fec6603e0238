//! A rogue CA operator (SPEC §7 P8, P10) on a [`LocalNet`]: see
//! [`duokey_server::rogue::Rogue`].

use crate::LocalNet;
use duokey_crypto::*;
pub use duokey_server::rogue::Rogue;

impl LocalNet {
    /// The CA operator mints `user` with a key of its own (see [`Rogue`]).
    pub async fn rogue(&self, user: &str) -> Rogue {
        let ca = duokey_pki::Ca::load(&self.dir.path().join("srv/ca")).unwrap();
        Rogue::mint(
            &ca,
            self.client.cs_url.as_slice(),
            &UserId::new(user).unwrap(),
        )
        .await
        .unwrap()
    }

    /// How many `rn1` items addressed to `user` that the CS holds open
    /// with `secret`: what reached the holder of that key.
    pub async fn rn1_opened_by(&self, user: &str, secret: &DeliverySecret) -> usize {
        let cs = self.cs_db().await;
        let stored = cs.inbox_after(user, 0, 1000).await.unwrap();
        cs.close().await;
        let items: Vec<Item> = stored
            .iter()
            .filter_map(|e| SignedItem::parse(&e.item).ok().map(|s| s.item))
            .collect();
        Rogue::rn1_opened(&items, secret)
    }
}
