//! A benchmark member's terminal profile: the
//! terminal's own SQLite store (`duokey_terminal::store`, WAL,
//! `synchronous=FULL`, `secure_delete`), its secrets sealed with a profile
//! key, written at a re-key as `Terminal` writes it — so the members' cost
//! includes what a real terminal pays to keep the new key across a crash.

use crate::BenchResult;
use duokey_crypto::GroupId;
use duokey_crypto::R1;
use duokey_crypto::membership::SignedChange;
use duokey_proto::Grant;
use duokey_terminal::store::{Store, StoredGrant};
use duokey_terminal::vault::Vault;
use std::path::Path;

fn err(e: duokey_terminal::Error) -> String {
    e.to_string()
}

/// One member's profile, holding one group.
pub(crate) struct Profile {
    store: Store,
    vault: Vault,
    gid: GroupId,
}

impl Profile {
    /// Creates the profile `dir/NAME.db` holding the group at `version`
    /// with `members` (every member's list, as the last grant stored it).
    pub(crate) async fn create(
        dir: &Path,
        name: &str,
        gid: GroupId,
        version: u64,
        members: &[(String, duokey_crypto::Rights)],
    ) -> BenchResult<Profile> {
        let store = Store::open(&dir.join(format!("{name}.db")))
            .await
            .map_err(err)?;
        let vault = Vault::from_plain_key(*Vault::random_key().map_err(err)?);
        let grant = StoredGrant {
            rn2_version: version,
            rn1_version: 1,
            rn2_sealed: vault.seal("rn2", &[7; 32]).map_err(err)?,
            members: members.to_vec(),
            ..StoredGrant::default()
        };
        store.put_grant(&gid, &grant).await.map_err(err)?;
        store
            .upsert_group(&gid, "bench", version, 1)
            .await
            .map_err(err)?;
        Ok(Profile { store, vault, gid })
    }

    /// What `Terminal::apply_grant` writes for a verified grant pushed by
    /// `Watch` (members left out, D27): the signed changes (one
    /// transaction), the member list rebuilt from the previous grant, the
    /// grant with RN2 sealed, the group's versions and the notice.
    pub(crate) async fn grant(&self, g: &Grant, changes: &[SignedChange]) -> BenchResult<()> {
        let (s, gid) = (&self.store, &self.gid);
        let rows: Vec<(u64, &[u8])> = changes
            .iter()
            .map(|c| (c.change().seq, c.as_bytes()))
            .collect();
        s.put_changes(gid, &rows).await.map_err(err)?;
        s.anchors_in(gid).await.map_err(err)?;
        let prev = s
            .grant(gid, g.rn2_version - 1)
            .await
            .map_err(err)?
            .ok_or("the previous grant is not in the profile")?;
        let mut members = prev.members;
        members.retain(|(u, _)| u != &g.subject);
        let stored = StoredGrant {
            rn2_version: g.rn2_version,
            rn1_version: g.rn1_version,
            rn2_sealed: self.vault.seal("rn2", &g.rn2).map_err(err)?,
            members,
            issued_at_ms: g.issued_at_ms,
            rn1_rotator: g.rn1_rotator.clone(),
            cause: g.cause,
            subject: g.subject.clone(),
            grace_secs: 0,
            retention_secs: 0,
        };
        s.put_grant(gid, &stored).await.map_err(err)?;
        s.meta_u64(&format!("refused_since:{}", hex::encode(gid)))
            .await
            .map_err(err)?;
        s.upsert_group(gid, "bench", g.rn2_version, g.rn1_version)
            .await
            .map_err(err)?;
        let text = format!("{} was removed", g.subject);
        s.notice(gid, &text, g.issued_at_ms).await.map_err(err)
    }

    /// What `Terminal::process_item` writes for an anchor: the item seen
    /// once, the anchor recorded.
    pub(crate) async fn anchor(
        &self,
        item_id: &duokey_crypto::ItemId,
        sender: &str,
        (seq, head): (u64, [u8; 32]),
        at_rn2_version: u64,
    ) -> BenchResult<()> {
        self.seen(item_id).await?;
        self.store
            .put_anchor_in(&self.gid, sender, seq, &head, at_rn2_version)
            .await
            .map_err(err)?;
        self.store.first_sight(item_id, 0).await.map_err(err)?;
        Ok(())
    }

    /// What it writes for an `rn1` item: R1 sealed, once (an R1 is never
    /// replaced), and the item seen once.
    pub(crate) async fn rn1(
        &self,
        item_id: &duokey_crypto::ItemId,
        version: u32,
        r1: &R1,
    ) -> BenchResult<()> {
        self.seen(item_id).await?;
        let (s, gid) = (&self.store, &self.gid);
        if s.r1(gid, version).await.map_err(err)?.is_none() {
            let sealed = self.vault.seal("r1", r1.expose_secret()).map_err(err)?;
            s.put_r1(gid, version, r1.rn2_version(), &sealed)
                .await
                .map_err(err)?;
        }
        s.first_sight(item_id, 0).await.map_err(err)?;
        Ok(())
    }

    /// The replay check every item passes first.
    async fn seen(&self, item_id: &duokey_crypto::ItemId) -> BenchResult<()> {
        match self.store.seen(item_id).await.map_err(err)? {
            true => Err("an item seen twice".to_owned()),
            false => Ok(()),
        }
    }
}
