//! The `rn1_wait` fallback (SPEC §4.3 step 4): when the member who must send
//! a group's new RN1 does not, another member makes one. Who acts and when is
//! the pure rule [`duokey_crypto::membership::State::rn1_fallback_at`]; this
//! module applies it and tells the user why messages wait.

use crate::membership::Intent;
use crate::store::GroupState;
use crate::{Error, ErrorKind, Result, Terminal};
use duokey_crypto::ItemId;
use duokey_crypto::ids::UserId;

/// Who a group's missing RN1 is awaited from, and when this terminal makes
/// a new one itself if it has not arrived.
struct MissingRn1 {
    rn1_version: u32,
    rotator: UserId,
    /// `None` when this terminal is not one of the members who act (it
    /// joined after the rotation: its inviter's hand-over brings the key).
    fallback_at_ms: Option<u64>,
}

impl Terminal {
    /// Why a message queued for a key waits, in words for the user, or
    /// `None` if the group's current RN1 is here.
    pub async fn key_wait(&mut self, gid: &[u8; 16]) -> Result<Option<String>> {
        let Some(missing) = self.missing_rn1(gid).await? else {
            return Ok(None);
        };
        let from = &missing.rotator;
        Ok(Some(match missing.fallback_at_ms {
            Some(at) => {
                let secs = at.saturating_sub(crate::now_ms()).div_ceil(1000);
                format!(
                    "the group's new key from {from} has not arrived yet; if it has not in {secs} s, \
                     this terminal makes a new one at its next sync"
                )
            }
            None => format!(
                "the group's key has not arrived yet (it comes from {from} or from whoever invited you)"
            ),
        }))
    }

    /// SPEC §4.3 step 4: every group whose current RN1 has not arrived by
    /// the time the verified history names for this terminal gets a new one
    /// from it (a signed `rotate_rn1`); the user is told. A transient fault
    /// stops the sync (retried later); a refusal is reported and skipped.
    pub(crate) async fn replace_missing_rn1(&mut self) -> Result<()> {
        for g in self.store.groups().await? {
            if g.state != GroupState::Active || self.store.forked(&g.group_id).await? {
                continue;
            }
            let Some(missing) = self.missing_rn1(&g.group_id).await? else {
                continue;
            };
            let due = missing
                .fallback_at_ms
                .is_some_and(|at| crate::now_ms() >= at);
            if due && missing.rn1_version == g.rn1_version {
                self.replace_rn1(&g.group_id, &g.name, &missing).await?;
            }
        }
        Ok(())
    }

    async fn replace_rn1(
        &mut self,
        gid: &[u8; 16],
        name: &str,
        missing: &MissingRn1,
    ) -> Result<()> {
        let intent = Intent::ReplaceMissingRn1(missing.rn1_version);
        match self.submit(gid, intent, &ItemId::random()?).await {
            Ok((Some(grant), _)) => {
                let wait = self
                    .membership(gid)
                    .await?
                    .map_or(0, |s| s.policy.rn1_wait_secs);
                let text = format!(
                    "{}'s new group key did not arrive within {wait} s; this terminal made a new one \
                     and sends it to the members",
                    missing.rotator
                );
                self.store.notice(gid, &text, crate::now_ms()).await?;
                self.warn(format!("{name}: {text}"));
                self.apply_grant(grant).await
            }
            Ok((None, _)) => Err(Error::Internal("rotation without a grant")),
            Err(Error::Superseded) => self.sync_grants().await,
            Err(e) if e.kind() == ErrorKind::Network => Err(e),
            Err(e) => {
                self.warn(format!(
                    "{name}: could not replace the missing group key: {e}"
                ));
                Ok(())
            }
        }
    }

    /// The group's current RN1, if this terminal does not hold it.
    async fn missing_rn1(&mut self, gid: &[u8; 16]) -> Result<Option<MissingRn1>> {
        let Some(state) = self.membership(gid).await? else {
            return Ok(None);
        };
        if self.store.r1(gid, state.rn1_version).await?.is_some() {
            return Ok(None);
        }
        let Some(rotation) = state.rn1_rotations.last().cloned() else {
            return Ok(None);
        };
        let before = self
            .membership_at(gid, rotation.seq.saturating_sub(1))
            .await?;
        let fallback_at_ms = before.and_then(|b| state.rn1_fallback_at(&self.me, &b));
        Ok(Some(MissingRn1 {
            rn1_version: state.rn1_version,
            rotator: rotation.rotator,
            fallback_at_ms,
        }))
    }
}
