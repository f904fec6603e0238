//! GMS tables: groups, members, grants (RN2 history), reports, departures
//! and the outbox of membership updates for the CS (SPEC §4, §5.2, §5.4).

use crate::{Error, Result, get_u64, group_version, to_i64, to_u64};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

/// A group's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// Raw 16-byte id.
    pub group_id: Vec<u8>,
    /// Name.
    pub name: String,
    /// Current RN2 version.
    pub rn2_version: u64,
    /// Current RN1 version.
    pub rn1_version: u32,
    /// Encoded `Policy`.
    pub policy: Vec<u8>,
    /// Destroyed by its owner.
    pub deleted: bool,
    /// When the next periodic rotation is due.
    pub next_rotation_ms: i64,
}

/// A member and its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// User id.
    pub user_id: String,
    /// Rights bits.
    pub rights: u8,
}

/// A user who lost membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The user.
    pub user_id: String,
    /// The first RN2 version without them.
    pub rn2_version: u64,
    /// `RemovalCause` value.
    pub cause: i32,
    /// Who removed them (empty if nobody).
    pub by: String,
}

/// A signed membership change to store (SPEC §4.7).
#[derive(Debug, Clone)]
pub struct MembershipRow<'a> {
    /// Its seq in the group's chain.
    pub seq: u64,
    /// The signed change (`DKM1`).
    pub change: &'a [u8],
    /// The actor's certificate chain (DER, leaf first).
    pub actor_chain: &'a [Vec<u8>],
}

/// A stored membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    /// Its seq.
    pub seq: u64,
    /// The signed change.
    pub change: Vec<u8>,
    /// The actor's certificate chain (DER, leaf first).
    pub actor_chain: Vec<Vec<u8>>,
}

async fn insert_membership(
    tx: &mut Transaction<'_, Any>,
    group_id: &[u8],
    m: &MembershipRow<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO gms_changes (group_id, seq, change, actor_chain) VALUES ($1, $2, $3, $4)",
    )
    .bind(group_id.to_vec())
    .bind(to_i64(m.seq)?)
    .bind(m.change.to_vec())
    .bind(crate::encode_chain(m.actor_chain)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One serialised change of a group: a new RN2 version with its grant.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// The group.
    pub group_id: &'a [u8],
    /// The version this change was computed from (checked: no lost update).
    pub from_rn2_version: u64,
    /// The new grant's RN2 version (`from + 1`).
    pub rn2_version: u64,
    /// The new grant's RN1 version.
    pub rn1_version: u32,
    /// The encoded new grant.
    pub grant_pb: &'a [u8],
    /// When it was issued.
    pub issued_at_ms: i64,
    /// When the next periodic rotation is due.
    pub next_rotation_ms: i64,
    /// Members added, or whose rights change (a transfer of ownership).
    pub upserts: Vec<MemberRow>,
    /// A member removed or departed.
    pub departure: Option<Departure>,
    /// The report that caused it, for idempotency.
    pub report_id: Option<&'a [u8]>,
    /// The signed membership change that caused it, if any.
    pub membership: Option<MembershipRow<'a>>,
    /// The group's new encoded policy, when the change sets one.
    pub policy: Option<&'a [u8]>,
}

fn group_row(r: &AnyRow) -> Result<GroupRow> {
    Ok(GroupRow {
        group_id: r.try_get("group_id")?,
        name: r.try_get("name")?,
        rn2_version: get_u64(r, "rn2_version")?,
        rn1_version: u32::try_from(r.try_get::<i64, _>("rn1_version")?)
            .map_err(|_| Error::Corrupt("rn1_version"))?,
        policy: r.try_get("policy")?,
        deleted: r.try_get::<i64, _>("deleted")? != 0,
        next_rotation_ms: r.try_get("next_rotation_ms")?,
    })
}

/// The columns [`group_row`] reads, as a literal for `concat!`.
macro_rules! group_columns {
    () => {
        "group_id, name, rn2_version, rn1_version, policy, deleted, next_rotation_ms"
    };
}

async fn queue_cs_sync(
    tx: &mut Transaction<'_, Any>,
    group_id: &[u8],
    rn2_version: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO gms_cs_outbox (group_id, rn2_version, synced) VALUES ($1, $2, 0) \
         ON CONFLICT (group_id) DO UPDATE SET rn2_version = excluded.rn2_version, synced = 0",
    )
    .bind(group_id.to_vec())
    .bind(to_i64(rn2_version)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_grant(
    tx: &mut Transaction<'_, Any>,
    group_id: &[u8],
    v: u64,
    pb: &[u8],
    at: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO gms_grants (group_id, rn2_version, grant_pb, issued_at_ms) VALUES ($1, $2, $3, $4)")
        .bind(group_id.to_vec())
        .bind(to_i64(v)?)
        .bind(pb.to_vec())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_member(
    tx: &mut Transaction<'_, Any>,
    group_id: &[u8],
    m: &MemberRow,
    since: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO gms_members (group_id, user_id, rights, since_rn2_version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (group_id, user_id) DO UPDATE SET rights = excluded.rights",
    )
    .bind(group_id.to_vec())
    .bind(m.user_id.clone())
    .bind(i64::from(m.rights))
    .bind(to_i64(since)?)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM gms_departures WHERE group_id = $1 AND user_id = $2")
        .bind(group_id.to_vec())
        .bind(m.user_id.clone())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn record_departure(
    tx: &mut Transaction<'_, Any>,
    group_id: &[u8],
    d: &Departure,
) -> Result<()> {
    sqlx::query("DELETE FROM gms_members WHERE group_id = $1 AND user_id = $2")
        .bind(group_id.to_vec())
        .bind(d.user_id.clone())
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO gms_departures (group_id, user_id, rn2_version, cause, by_user) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (group_id, user_id) DO UPDATE SET rn2_version = excluded.rn2_version, \
         cause = excluded.cause, by_user = excluded.by_user",
    )
    .bind(group_id.to_vec())
    .bind(d.user_id.clone())
    .bind(to_i64(d.rn2_version)?)
    .bind(i64::from(d.cause))
    .bind(d.by.clone())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

crate::role_store!(
    /// The GMS's store (SPEC §6): groups, members, the signed membership log, grants and the CS outbox.
    GmsStore,
    Gms
);

impl GmsStore {
    /// Creates a group with its owner and first grant. `false` if the id exists.
    pub async fn create_group(
        &self,
        g: &GroupRow,
        owner: &MemberRow,
        grant_pb: &[u8],
        now_ms: i64,
        membership: &MembershipRow<'_>,
    ) -> Result<bool> {
        let mut tx = self.w().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO gms_groups (group_id, name, rn2_version, rn1_version, policy, deleted, next_rotation_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7) ON CONFLICT (group_id) DO NOTHING",
        )
        .bind(g.group_id.clone())
        .bind(g.name.clone())
        .bind(to_i64(g.rn2_version)?)
        .bind(i64::from(g.rn1_version))
        .bind(g.policy.clone())
        .bind(g.next_rotation_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        upsert_member(&mut tx, &g.group_id, owner, g.rn2_version).await?;
        insert_membership(&mut tx, &g.group_id, membership).await?;
        insert_grant(&mut tx, &g.group_id, g.rn2_version, grant_pb, now_ms).await?;
        queue_cs_sync(&mut tx, &g.group_id, g.rn2_version).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A group's current state.
    pub async fn group(&self, group_id: &[u8]) -> Result<Option<GroupRow>> {
        let sql = concat!(
            "SELECT ",
            group_columns!(),
            " FROM gms_groups WHERE group_id = $1"
        );
        let row = sqlx::query(sql)
            .bind(group_id.to_vec())
            .fetch_optional(self.r())
            .await?;
        row.as_ref().map(group_row).transpose()
    }

    /// The current members of a group, ordered by user id.
    pub async fn members(&self, group_id: &[u8]) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT user_id, rights FROM gms_members WHERE group_id = $1 ORDER BY user_id",
        )
        .bind(group_id.to_vec())
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    user_id: r.try_get("user_id")?,
                    rights: u8::try_from(r.try_get::<i64, _>("rights")?)
                        .map_err(|_| Error::Corrupt("rights"))?,
                })
            })
            .collect()
    }

    /// Applies one change in one transaction. `false` if the group moved on
    /// since `from_rn2_version` (the caller serialises changes per group, so
    /// this signals a second GMS process; retry with fresh state).
    pub async fn apply_change(&self, c: &Change<'_>) -> Result<bool> {
        let mut tx = self.w().begin().await?;
        let updated = sqlx::query(
            "UPDATE gms_groups SET rn2_version = $1, rn1_version = $2, next_rotation_ms = $3, rotation_lease_ms = 0 \
             WHERE group_id = $4 AND rn2_version = $5 AND deleted = 0",
        )
        .bind(to_i64(c.rn2_version)?)
        .bind(i64::from(c.rn1_version))
        .bind(c.next_rotation_ms)
        .bind(c.group_id.to_vec())
        .bind(to_i64(c.from_rn2_version)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        for m in &c.upserts {
            upsert_member(&mut tx, c.group_id, m, c.rn2_version).await?;
        }
        if let Some(d) = &c.departure {
            record_departure(&mut tx, c.group_id, d).await?;
        }
        if let Some(m) = &c.membership {
            insert_membership(&mut tx, c.group_id, m).await?;
        }
        if let Some(p) = c.policy {
            sqlx::query("UPDATE gms_groups SET policy = $1 WHERE group_id = $2")
                .bind(p.to_vec())
                .bind(c.group_id.to_vec())
                .execute(&mut *tx)
                .await?;
        }
        insert_grant(
            &mut tx,
            c.group_id,
            c.rn2_version,
            c.grant_pb,
            c.issued_at_ms,
        )
        .await?;
        if let Some(report_id) = c.report_id {
            sqlx::query(
                "INSERT INTO gms_reports (report_id, group_id, rn2_version) VALUES ($1, $2, $3)",
            )
            .bind(report_id.to_vec())
            .bind(c.group_id.to_vec())
            .bind(to_i64(c.rn2_version)?)
            .execute(&mut *tx)
            .await?;
        }
        queue_cs_sync(&mut tx, c.group_id, c.rn2_version).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Imports members into an existing group in one transaction, without
    /// issuing a grant (migrations from another system, benchmarks of large
    /// groups). They hold nothing until the next change of the group issues
    /// the grant that names them; `since` should be that version.
    pub async fn import_members(
        &self,
        group_id: &[u8],
        members: &[MemberRow],
        since: u64,
    ) -> Result<()> {
        let mut tx = self.w().begin().await?;
        for m in members {
            upsert_member(&mut tx, group_id, m, since).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks a group destroyed: every member departs with `cause`, and
    /// every grant (RN2) of the group is erased.
    pub async fn delete_group(
        &self,
        group_id: &[u8],
        rn2_version: u64,
        cause: i32,
        by: &str,
        membership: &MembershipRow<'_>,
    ) -> Result<Vec<String>> {
        let members = self.members(group_id).await?;
        let mut tx = self.w().begin().await?;
        insert_membership(&mut tx, group_id, membership).await?;
        sqlx::query("UPDATE gms_groups SET deleted = 1 WHERE group_id = $1")
            .bind(group_id.to_vec())
            .execute(&mut *tx)
            .await?;
        // A deleted group's RN2s serve nobody any more (SPEC §7 P5).
        sqlx::query("DELETE FROM gms_grants WHERE group_id = $1")
            .bind(group_id.to_vec())
            .execute(&mut *tx)
            .await?;
        for m in &members {
            let d = Departure {
                user_id: m.user_id.clone(),
                rn2_version,
                cause,
                by: by.to_owned(),
            };
            record_departure(&mut tx, group_id, &d).await?;
        }
        queue_cs_sync(&mut tx, group_id, rn2_version).await?;
        tx.commit().await?;
        Ok(members.into_iter().map(|m| m.user_id).collect())
    }

    /// A group's membership changes after `after_seq`, at most `limit`, in order.
    pub async fn changes(
        &self,
        group_id: &[u8],
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredChange>> {
        let rows = sqlx::query(
            "SELECT seq, change, actor_chain FROM gms_changes WHERE group_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(group_id.to_vec())
        .bind(to_i64(after_seq)?)
        .bind(i64::from(limit))
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredChange {
                    seq: get_u64(r, "seq")?,
                    change: r.try_get("change")?,
                    actor_chain: crate::decode_chain(&r.try_get::<Vec<u8>, _>("actor_chain")?)?,
                })
            })
            .collect()
    }

    /// The seq of a group's last stored membership change (0 if none).
    pub async fn membership_seq(&self, group_id: &[u8]) -> Result<u64> {
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM gms_changes WHERE group_id = $1")
            .bind(group_id.to_vec())
            .fetch_one(self.r())
            .await?;
        row.try_get::<Option<i64>, _>("seq")?
            .map_or(Ok(0), |v| to_u64(v, "seq"))
    }

    /// Imports signed membership changes into an existing group in one
    /// transaction (with [`GmsStore::import_members`]: migrations and benchmarks of
    /// large groups). The caller guarantees they extend the stored chain.
    pub async fn import_changes(
        &self,
        group_id: &[u8],
        changes: &[MembershipRow<'_>],
    ) -> Result<()> {
        let mut tx = self.w().begin().await?;
        for m in changes {
            insert_membership(&mut tx, group_id, m).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The RN2 version a report produced, if it was applied already.
    pub async fn report(&self, report_id: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
        let row = sqlx::query("SELECT group_id, rn2_version FROM gms_reports WHERE report_id = $1")
            .bind(report_id.to_vec())
            .fetch_optional(self.r())
            .await?;
        row.as_ref().map(group_version).transpose()
    }

    /// An encoded grant of a version, if still kept.
    pub async fn grant(&self, group_id: &[u8], rn2_version: u64) -> Result<Option<Vec<u8>>> {
        let row =
            sqlx::query("SELECT grant_pb FROM gms_grants WHERE group_id = $1 AND rn2_version = $2")
                .bind(group_id.to_vec())
                .bind(to_i64(rn2_version)?)
                .fetch_optional(self.r())
                .await?;
        Ok(row.map(|r| r.try_get("grant_pb")).transpose()?)
    }

    /// Every encoded grant kept, oldest first (for operators' audits and the
    /// security tests that give an attacker every RN2).
    pub async fn all_grants(&self) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query("SELECT grant_pb FROM gms_grants ORDER BY group_id, rn2_version")
            .fetch_all(self.r())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("grant_pb")?)).collect()
    }

    /// The groups `user` is a current member of.
    pub async fn groups_of(&self, user: &str) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT m.group_id FROM gms_members m JOIN gms_groups g ON g.group_id = m.group_id \
             WHERE m.user_id = $1 AND g.deleted = 0 ORDER BY m.group_id",
        )
        .bind(user.to_owned())
        .fetch_all(self.r())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("group_id")?)).collect()
    }

    /// The departure of `user` from `group_id`, if it departed.
    pub async fn departure(&self, group_id: &[u8], user: &str) -> Result<Option<Departure>> {
        let row = sqlx::query(
            "SELECT rn2_version, cause, by_user FROM gms_departures WHERE group_id = $1 AND user_id = $2",
        )
        .bind(group_id.to_vec())
        .bind(user.to_owned())
        .fetch_optional(self.r())
        .await?;
        row.map(|r| {
            Ok(Departure {
                user_id: user.to_owned(),
                rn2_version: get_u64(&r, "rn2_version")?,
                cause: i32::try_from(r.try_get::<i64, _>("cause")?)
                    .map_err(|_| Error::Corrupt("cause"))?,
                by: r.try_get("by_user")?,
            })
        })
        .transpose()
    }

    /// Claims up to `limit` groups whose periodic rotation is due at
    /// `now_ms` and that no GMS node holds, until `lease_until_ms`: a GMS
    /// node rotates only the groups it claimed, so two nodes never rotate
    /// one group at the same time, and a group claimed by a node that died
    /// is due again once the lease expires (DESIGN D49).
    pub async fn claim_due_rotations(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<Vec<u8>>> {
        const CLAIM: &str = "UPDATE gms_groups SET rotation_lease_ms = $2 WHERE group_id IN (\
             SELECT group_id FROM gms_groups WHERE deleted = 0 AND next_rotation_ms <= $1 \
             AND rotation_lease_ms <= $1 ORDER BY next_rotation_ms LIMIT $3) RETURNING group_id";
        // PostgreSQL: rows another node is claiming are passed over, not waited for.
        const CLAIM_PG: &str = "UPDATE gms_groups SET rotation_lease_ms = $2 WHERE group_id IN (\
             SELECT group_id FROM gms_groups WHERE deleted = 0 AND next_rotation_ms <= $1 \
             AND rotation_lease_ms <= $1 ORDER BY next_rotation_ms LIMIT $3 \
             FOR UPDATE SKIP LOCKED) RETURNING group_id";
        let sql = if self.is_sqlite() { CLAIM } else { CLAIM_PG };
        let rows = sqlx::query(sql)
            .bind(now_ms)
            .bind(lease_until_ms)
            .bind(limit)
            .fetch_all(self.w())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("group_id")?)).collect()
    }

    /// The earliest time a rotation may be claimed (due, and any lease
    /// expired), if any group is live.
    pub async fn next_rotation_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN rotation_lease_ms > next_rotation_ms THEN rotation_lease_ms \
             ELSE next_rotation_ms END) AS t FROM gms_groups WHERE deleted = 0",
        )
        .fetch_one(self.r())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?)
    }

    /// Groups whose membership the CS has not acknowledged yet.
    pub async fn cs_outbox(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        let rows = sqlx::query("SELECT group_id, rn2_version FROM gms_cs_outbox WHERE synced = 0")
            .fetch_all(self.r())
            .await?;
        rows.iter().map(group_version).collect()
    }

    /// Records that the CS holds `rn2_version` (or newer) of a group.
    pub async fn cs_synced(&self, group_id: &[u8], rn2_version: u64) -> Result<()> {
        sqlx::query(
            "UPDATE gms_cs_outbox SET synced = 1 WHERE group_id = $1 AND rn2_version <= $2",
        )
        .bind(group_id.to_vec())
        .bind(to_i64(rn2_version)?)
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// Erases grants issued before `before_ms` except each group's current
    /// one (SPEC §4.5 retention: old RN2s become unobtainable).
    pub async fn purge_grants(
        &self,
        group_id: &[u8],
        before_ms: i64,
        keep_version: u64,
    ) -> Result<u64> {
        let n = sqlx::query(
            "DELETE FROM gms_grants WHERE group_id = $1 AND issued_at_ms < $2 AND rn2_version < $3",
        )
        .bind(group_id.to_vec())
        .bind(before_ms)
        .bind(to_i64(keep_version)?)
        .execute(self.w())
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Every live group id (for retention sweeps).
    pub async fn live_groups(&self) -> Result<Vec<GroupRow>> {
        let sql = concat!(
            "SELECT ",
            group_columns!(),
            " FROM gms_groups WHERE deleted = 0"
        );
        let rows = sqlx::query(sql).fetch_all(self.r()).await?;
        rows.iter().map(group_row).collect()
    }
}
