//! Pushes membership to the CS (SPEC §5.4), retried until it succeeds.
//!
//! Every change writes a row in `gms_cs_outbox` in the same transaction as the
//! new grant. This task sends the group's *current* membership for each row
//! not yet acknowledged and marks it synced when the CS answers. A lagging or
//! unreachable CS is visible as pending outbox rows (metric
//! `duokey_gms_cs_outbox_pending`) and is repaired by the next successful
//! round; `SetMembers` ignores older versions, so retries and reordering are
//! harmless.

use crate::Gms;
use crate::grants::decode_policy;
use duokey_proto::SetMembersRequest;
use duokey_proto::membership_sync_client::MembershipSyncClient;
use std::time::Duration;
use tonic::transport::Channel;

/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Gms {
    /// One round: sends every pending group. Returns how many are still pending.
    pub async fn sync_cs_once(&self, cs: &mut MembershipSyncClient<Channel>) -> usize {
        let db = &self.inner.db;
        let pending = match db.cs_outbox().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the CS outbox");
                return usize::MAX;
            }
        };
        let mut left = 0;
        for (gid, _) in &pending {
            if self.sync_group(cs, gid).await.is_err() {
                left += 1;
            }
        }
        metrics::gauge!("duokey_gms_cs_outbox_pending").set(left as f64);
        self.inner.cs_pending.send_modify(|(rounds, pending)| {
            *rounds += 1;
            *pending = left;
        });
        left
    }

    async fn sync_group(
        &self,
        cs: &mut MembershipSyncClient<Channel>,
        gid: &[u8],
    ) -> Result<(), ()> {
        let db = &self.inner.db;
        let group = db.group(gid).await.map_err(|_| ())?.ok_or(())?;
        let members = if group.deleted {
            Vec::new()
        } else {
            db.members(gid).await.map_err(|_| ())?
        };
        let req = SetMembersRequest {
            group_id: gid.to_vec(),
            rn2_version: group.rn2_version,
            members: members.into_iter().map(|m| m.user_id).collect(),
            deleted: group.deleted,
            retention_secs: decode_policy(&group.policy).retention_secs,
        };
        match cs.set_members(req).await {
            Ok(resp) => {
                db.cs_synced(gid, resp.get_ref().stored_rn2_version)
                    .await
                    .map_err(|_| ())?;
                Ok(())
            }
            Err(status) => {
                tracing::warn!(group = %crate::hex(gid), %status, "CS did not take the membership yet");
                Err(())
            }
        }
    }
}

/// How often a GMS node of a cluster looks at the outbox unprompted: a
/// change committed by a node that died before telling the CS is sent by
/// the others within this (DESIGN D49).
const CLUSTER_SWEEP: Duration = Duration::from_secs(10);

/// Runs the CS sync until the process ends: a round after every change, and
/// retries with exponential back-off while anything is pending. `cs` may
/// reach several CS nodes (`channel_any`); any of them will do, as they
/// share the database.
pub async fn run(gms: Gms, mut cs: MembershipSyncClient<Channel>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let left = gms.sync_cs_once(&mut cs).await;
        if left == 0 {
            backoff = Duration::from_millis(100);
            if gms.clustered() {
                tokio::select! {
                    _ = tokio::time::sleep(CLUSTER_SWEEP) => {}
                    _ = gms.inner.cs_changed.notified() => {}
                }
            } else {
                gms.inner.cs_changed.notified().await;
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = gms.inner.cs_changed.notified() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
