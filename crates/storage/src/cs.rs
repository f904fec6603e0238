//! CS tables: directory, inboxes, group membership and ciphertext logs
//! (SPEC §5.3, §5.4).

use crate::{Error, Result, get_u64, to_i64, to_u64};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// A stored inbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    /// Position in the recipient's inbox.
    pub cursor: u64,
    /// The signed item bytes.
    pub item: Vec<u8>,
    /// When the CS stored it.
    pub received_at_ms: u64,
}

/// A stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Position in the group's log.
    pub log_seq: u64,
    /// The envelope bytes.
    pub envelope: Vec<u8>,
    /// When the CS stored it.
    pub stored_at_ms: u64,
}

/// A group's membership as the CS knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsGroup {
    /// RN2 version of the membership.
    pub rn2_version: u64,
    /// Destroyed: refuse posts and fetches.
    pub deleted: bool,
    /// Ciphertext retention in seconds.
    pub retention_secs: u64,
}

fn cs_group_row(r: &AnyRow) -> Result<CsGroup> {
    Ok(CsGroup {
        rn2_version: get_u64(r, "rn2_version")?,
        deleted: r.try_get::<i64, _>("deleted")? != 0,
        retention_secs: get_u64(r, "retention_secs")?,
    })
}

/// One envelope to append; its position is given by
/// [`CsStore::append_envelopes`].
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The group.
    pub group_id: &'a [u8],
    /// Its sender (the caller).
    pub sender: &'a str,
    /// The envelope's message id: a second post of the same id in the
    /// group is the first one again (a retry whose answer was lost).
    pub msg_id: &'a [u8],
    /// The envelope.
    pub envelope: &'a [u8],
    /// When it was stored.
    pub at_ms: i64,
}

/// A group as the CS stores it ([`CsStore::cs_group_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// Version, deletion, retention.
    pub group: CsGroup,
    /// Current members.
    pub members: Vec<String>,
    /// Departed members and the last position each may read.
    pub departed: Vec<(String, u64)>,
}

/// What became of one envelope of [`CsStore::append_envelopes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this position.
    At(u64),
    /// Stored before at this position (the same message id): not stored
    /// again.
    Duplicate(u64),
    /// Refused: its sender is not a member of the group (or the group is
    /// unknown).
    NotMember,
    /// Refused: the group was deleted.
    Deleted,
}

/// Takes a group's row of `cs_log_heads` (creating it at 0) until the end
/// of `tx`, and returns its last position.
async fn lock_head(tx: &mut sqlx::Transaction<'_, sqlx::Any>, group_id: &[u8]) -> Result<i64> {
    Ok(sqlx::query(
        "INSERT INTO cs_log_heads (group_id, last_seq) VALUES ($1, 0) \
         ON CONFLICT (group_id) DO UPDATE SET last_seq = cs_log_heads.last_seq \
         RETURNING last_seq",
    )
    .bind(group_id.to_vec())
    .fetch_one(&mut **tx)
    .await?
    .try_get("last_seq")?)
}

/// The position of the post of `msg_id` in the group, if stored.
async fn stored_msg(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    group_id: &[u8],
    msg_id: &[u8],
) -> Result<Option<u64>> {
    let row = sqlx::query("SELECT log_seq FROM cs_log WHERE group_id = $1 AND msg_id = $2")
        .bind(group_id.to_vec())
        .bind(msg_id.to_vec())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(|r| get_u64(r, "log_seq")).transpose()
}

/// Who of a batch's senders may post to a group now.
enum Standing {
    /// The group was deleted (or never known: then nobody is a member).
    Deleted,
    /// These senders are current members.
    Members(Vec<String>),
}

/// Which of `senders` are members of the live group, read under its head
/// row.
async fn standing(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    group_id: &[u8],
    senders: &[&str],
) -> Result<Standing> {
    let deleted = sqlx::query("SELECT deleted FROM cs_groups WHERE group_id = $1")
        .bind(group_id.to_vec())
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get::<i64, _>("deleted"))
        .transpose()?;
    match deleted {
        None => return Ok(Standing::Members(Vec::new())),
        Some(d) if d != 0 => return Ok(Standing::Deleted),
        Some(_) => {}
    }
    let sql = format!(
        "SELECT user_id FROM cs_members WHERE group_id = $1 AND user_id IN ({})",
        placeholders_from(2, senders.len())
    );
    // Only numbered placeholders are formatted in: no input reaches the text.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(group_id.to_vec());
    for s in senders {
        q = q.bind((*s).to_owned());
    }
    let rows = q.fetch_all(&mut **tx).await?;
    Ok(Standing::Members(
        rows.iter()
            .map(|r| r.try_get("user_id"))
            .collect::<Result<_, _>>()?,
    ))
}

/// Stores one post at `seq`; `false` if its `msg_id` is already stored in
/// the group (nothing stored).
async fn insert_post(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    post: &Append<'_>,
    seq: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO cs_log (group_id, log_seq, sender, envelope, stored_at_ms, msg_id) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (group_id, msg_id) DO NOTHING",
    )
    .bind(post.group_id.to_vec())
    .bind(seq)
    .bind(post.sender.to_owned())
    .bind(post.envelope.to_vec())
    .bind(post.at_ms)
    .bind(post.msg_id.to_vec())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An inbox item to store.
#[derive(Debug, Clone, Copy)]
pub struct NewItem<'a> {
    /// Whose inbox.
    pub recipient: &'a str,
    /// The item's id.
    pub item_id: &'a [u8],
    /// Its sender.
    pub sender: &'a str,
    /// Its kind.
    pub kind: u8,
    /// The signed item.
    pub item: &'a [u8],
}

crate::role_store!(
    /// The CS's store (SPEC §6): the directory, inboxes, group logs and the membership the GMS tells it.
    CsStore,
    Cs
);

impl CsStore {
    /// Records the certificate chain a user presented (from its mTLS handshake).
    pub async fn upsert_user(&self, user: &str, chain: &[Vec<u8>], now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO cs_users (user_id, cert_chain, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET cert_chain = excluded.cert_chain, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(user.to_owned())
        .bind(crate::encode_chain(chain)?)
        .bind(now_ms)
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// Stores a user's signed delivery key record.
    pub async fn set_delivery_key(&self, user: &str, record: &[u8]) -> Result<()> {
        sqlx::query("UPDATE cs_users SET delivery_key = $1 WHERE user_id = $2")
            .bind(record.to_vec())
            .bind(user.to_owned())
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// A user's certificate chain and delivery key record.
    pub async fn user(&self, user: &str) -> Result<Option<(Vec<Vec<u8>>, Option<Vec<u8>>)>> {
        let row = sqlx::query("SELECT cert_chain, delivery_key FROM cs_users WHERE user_id = $1")
            .bind(user.to_owned())
            .fetch_optional(self.r())
            .await?;
        row.map(|r| {
            Ok((
                crate::decode_chain(&r.try_get::<Vec<u8>, _>("cert_chain")?)?,
                r.try_get("delivery_key")?,
            ))
        })
        .transpose()
    }

    /// Of `users`, those in the directory (enrolled terminals that connected).
    pub async fn known_users(&self, users: &[&str]) -> Result<Vec<String>> {
        let rows = self
            .rows_of_users(users, |list| {
                format!("SELECT user_id FROM cs_users WHERE user_id IN ({list})")
            })
            .await?;
        rows.iter().map(|r| Ok(r.try_get("user_id")?)).collect()
    }

    /// What the inboxes of `users` hold: (user, items, bytes), for those
    /// holding any.
    pub async fn inbox_usage(&self, users: &[&str]) -> Result<Vec<(String, u64, u64)>> {
        let rows = self
            .rows_of_users(users, |list| {
                format!(
                    "SELECT recipient, COUNT(*) AS n, COALESCE(SUM(LENGTH(item)), 0) AS b \
                     FROM cs_inbox WHERE recipient IN ({list}) GROUP BY recipient"
                )
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("recipient")?,
                    to_u64(r.try_get("n")?, "count")?,
                    to_u64(r.try_get("b")?, "bytes")?,
                ))
            })
            .collect()
    }

    /// The rows of the query `sql` makes of an `IN` list, with `users` bound
    /// to that list (no rows, and no query, for no users).
    async fn rows_of_users(
        &self,
        users: &[&str],
        sql: impl FnOnce(&str) -> String,
    ) -> Result<Vec<AnyRow>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        // Only numbered placeholders are formatted in: no input reaches the text.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql(&placeholders(users.len()))));
        for u in users {
            q = q.bind(u.to_string());
        }
        Ok(q.fetch_all(self.r()).await?)
    }

    /// Erases inbox items received before `before_ms` (an inbox
    /// nobody reads does not grow for ever). Returns how many.
    pub async fn purge_inbox(&self, before_ms: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM cs_inbox WHERE received_at_ms < $1")
                .bind(before_ms)
                .execute(self.w())
                .await?
                .rows_affected(),
        )
    }

    /// Puts items into inboxes in one transaction (one durable write): each
    /// as [`CsStore::inbox_insert`] would. Returns `(cursor, newly_inserted)` per item.
    pub async fn inbox_insert_many(
        &self,
        items: &[NewItem<'_>],
        now_ms: i64,
    ) -> Result<Vec<(u64, bool)>> {
        let mut tx = self.w().begin().await?;
        // Each recipient's row first, in a fixed order (no cycle between
        // two transactions): their cursors then commit in cursor order.
        let mut recipients: Vec<&str> = items.iter().map(|i| i.recipient).collect();
        recipients.sort_unstable();
        recipients.dedup();
        for recipient in recipients {
            sqlx::query(
                "INSERT INTO cs_inbox_heads (recipient, items) VALUES ($1, 1) \
                 ON CONFLICT (recipient) DO UPDATE SET items = cs_inbox_heads.items + 1",
            )
            .bind(recipient.to_owned())
            .execute(&mut *tx)
            .await?;
        }
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let inserted = sqlx::query(
                "INSERT INTO cs_inbox (recipient, item_id, sender, kind, item, received_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (recipient, item_id) DO NOTHING",
            )
            .bind(it.recipient.to_owned())
            .bind(it.item_id.to_vec())
            .bind(it.sender.to_owned())
            .bind(i64::from(it.kind))
            .bind(it.item.to_vec())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let row =
                sqlx::query("SELECT cursor FROM cs_inbox WHERE recipient = $1 AND item_id = $2")
                    .bind(it.recipient.to_owned())
                    .bind(it.item_id.to_vec())
                    .fetch_one(&mut *tx)
                    .await?;
            out.push((get_u64(&row, "cursor")?, inserted == 1));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Puts an item into an inbox; the same `item_id` twice is stored once
    /// and answers the first cursor. Returns `(cursor, newly_inserted)`.
    pub async fn inbox_insert(
        &self,
        recipient: &str,
        item_id: &[u8],
        sender: &str,
        kind: u8,
        item: &[u8],
        now_ms: i64,
    ) -> Result<(u64, bool)> {
        let one = NewItem {
            recipient,
            item_id,
            sender,
            kind,
            item,
        };
        self.inbox_insert_many(&[one], now_ms)
            .await?
            .pop()
            .ok_or(Error::Corrupt("inbox insert"))
    }

    /// Items of an inbox after a cursor, oldest first.
    pub async fn inbox_after(
        &self,
        recipient: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredItem>> {
        let rows = sqlx::query(
            "SELECT cursor, item, received_at_ms FROM cs_inbox WHERE recipient = $1 AND cursor > $2 \
             ORDER BY cursor LIMIT $3",
        )
        .bind(recipient.to_owned())
        .bind(to_i64(after)?)
        .bind(i64::from(limit))
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredItem {
                    cursor: get_u64(r, "cursor")?,
                    item: r.try_get("item")?,
                    received_at_ms: get_u64(r, "received_at_ms")?,
                })
            })
            .collect()
    }

    /// Deletes inbox items up to a cursor; returns how many.
    pub async fn inbox_ack(&self, recipient: &str, up_to: u64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM cs_inbox WHERE recipient = $1 AND cursor <= $2")
                .bind(recipient.to_owned())
                .bind(to_i64(up_to)?)
                .execute(self.w())
                .await?
                .rows_affected(),
        )
    }

    /// Replaces a group's membership if `rn2_version` is newer than the
    /// stored one (or equal, to make retries idempotent). Returns the
    /// version held afterwards.
    pub async fn set_members(
        &self,
        group_id: &[u8],
        rn2_version: u64,
        members: &[String],
        deleted: bool,
        retention_secs: u64,
    ) -> Result<u64> {
        let mut tx = self.w().begin().await?;
        // First the group's head row: concurrent changes of one group (two
        // GMS nodes pushing) and appends to it take their turns.
        lock_head(&mut tx, group_id).await?;
        let current = sqlx::query("SELECT rn2_version FROM cs_groups WHERE group_id = $1")
            .bind(group_id.to_vec())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<i64, _>("rn2_version"))
            .transpose()?
            .map(|v| to_u64(v, "rn2_version"))
            .transpose()?;
        if current.is_some_and(|c| c > rn2_version) {
            return Ok(current.unwrap_or(rn2_version));
        }
        sqlx::query(
            "INSERT INTO cs_groups (group_id, rn2_version, deleted, retention_secs) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (group_id) DO UPDATE SET rn2_version = excluded.rn2_version, \
             deleted = excluded.deleted, retention_secs = excluded.retention_secs",
        )
        .bind(group_id.to_vec())
        .bind(to_i64(rn2_version)?)
        .bind(i64::from(deleted))
        .bind(to_i64(retention_secs)?)
        .execute(&mut *tx)
        .await?;
        record_departures(&mut tx, group_id, members, deleted).await?;
        sqlx::query("DELETE FROM cs_members WHERE group_id = $1")
            .bind(group_id.to_vec())
            .execute(&mut *tx)
            .await?;
        for m in members.iter().filter(|_| !deleted) {
            sqlx::query("INSERT INTO cs_members (group_id, user_id) VALUES ($1, $2)")
                .bind(group_id.to_vec())
                .bind(m.clone())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rn2_version)
    }

    /// A group's state at the CS.
    pub async fn cs_group(&self, group_id: &[u8]) -> Result<Option<CsGroup>> {
        let row = sqlx::query(
            "SELECT rn2_version, deleted, retention_secs FROM cs_groups WHERE group_id = $1",
        )
        .bind(group_id.to_vec())
        .fetch_optional(self.r())
        .await?;
        row.as_ref().map(cs_group_row).transpose()
    }

    /// One group's state, members and departed members (with the last
    /// position each may read), for refreshing a CS process's view when
    /// another process changed it (DESIGN D49).
    pub async fn cs_group_view(&self, group_id: &[u8]) -> Result<Option<GroupState>> {
        let Some(group) = self.cs_group(group_id).await? else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT user_id FROM cs_members WHERE group_id = $1")
            .bind(group_id.to_vec())
            .fetch_all(self.r())
            .await?;
        let members = rows
            .iter()
            .map(|r| r.try_get("user_id"))
            .collect::<Result<_, _>>()?;
        Ok(Some(GroupState {
            group,
            members,
            departed: self.cs_departed(group_id).await?,
        }))
    }

    /// Every group's RN2 version, to find the groups whose view is stale.
    pub async fn cs_versions(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        let rows = sqlx::query("SELECT group_id, rn2_version FROM cs_groups")
            .fetch_all(self.r())
            .await?;
        rows.iter().map(crate::group_version).collect()
    }

    /// Every (group, member) pair, for loading the CS's in-memory view.
    pub async fn cs_all_members(&self) -> Result<Vec<(Vec<u8>, String)>> {
        let rows = sqlx::query("SELECT group_id, user_id FROM cs_members")
            .fetch_all(self.r())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("group_id")?, r.try_get("user_id")?)))
            .collect()
    }

    /// Every (group, departed member, last position it may read), for
    /// loading the CS's in-memory view.
    pub async fn cs_all_departed(&self) -> Result<Vec<(Vec<u8>, String, u64)>> {
        let rows = sqlx::query("SELECT group_id, user_id, upto_seq FROM cs_departed")
            .fetch_all(self.w())
            .await?;
        rows.iter()
            .map(|r| {
                let upto = get_u64(r, "upto_seq")?;
                Ok((r.try_get("group_id")?, r.try_get("user_id")?, upto))
            })
            .collect()
    }

    /// A group's departed members and the last position each may read.
    pub async fn cs_departed(&self, group_id: &[u8]) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT user_id, upto_seq FROM cs_departed WHERE group_id = $1")
            .bind(group_id.to_vec())
            .fetch_all(self.w())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("user_id")?, get_u64(r, "upto_seq")?)))
            .collect()
    }

    /// Every group's state, for loading the CS's in-memory view.
    pub async fn cs_all_groups(&self) -> Result<Vec<(Vec<u8>, CsGroup)>> {
        let rows =
            sqlx::query("SELECT group_id, rn2_version, deleted, retention_secs FROM cs_groups")
                .fetch_all(self.r())
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("group_id")?, cs_group_row(r)?)))
            .collect()
    }

    /// The last log position given in a group (0 if none), whether or not
    /// retention has erased it since.
    pub async fn max_log_seq(&self, group_id: &[u8]) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(last_seq), 0) AS s FROM cs_log_heads WHERE group_id = $1",
        )
        .bind(group_id.to_vec())
        .fetch_one(self.w())
        .await?;
        to_u64(row.try_get("s")?, "log_seq")
    }

    /// Appends envelopes in one transaction, each at the next position of
    /// its group (in batch order within a group) if its sender is, at that
    /// moment, a member of the live group; all are durable when this
    /// returns, with what became of each, in batch order.
    ///
    /// Positions come from the group's row in `cs_log_heads`, held to the
    /// end of the transaction: they never repeat (after a purge, or between
    /// CS processes sharing the database), a group's positions commit in
    /// order, and a membership change ([`CsStore::set_members`], which takes
    /// the same row first) is either wholly before or wholly after the
    /// batch. The membership is read under that row, so a member removed by
    /// any process is refused at once (DESIGN D49). Groups are taken in a
    /// fixed order, so two processes never wait on each other in a cycle.
    pub async fn append_envelopes(&self, batch: &[Append<'_>]) -> Result<Vec<Appended>> {
        let mut groups: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
        for (i, post) in batch.iter().enumerate() {
            groups.entry(post.group_id).or_default().push(i);
        }
        let mut result = vec![Appended::NotMember; batch.len()];
        let mut tx = self.w().begin().await?;
        for (group_id, posts) in groups {
            let mut last = lock_head(&mut tx, group_id).await?;
            let mut senders: Vec<&str> = posts.iter().map(|i| batch[*i].sender).collect();
            senders.sort_unstable();
            senders.dedup();
            let standing = standing(&mut tx, group_id, &senders).await?;
            for i in posts {
                let post = &batch[i];
                result[i] = match &standing {
                    Standing::Deleted => Appended::Deleted,
                    Standing::Members(m) if !m.iter().any(|s| s == post.sender) => {
                        Appended::NotMember
                    }
                    Standing::Members(_) => match insert_post(&mut tx, post, last + 1).await? {
                        true => {
                            last += 1;
                            Appended::At(to_u64(last, "log_seq")?)
                        }
                        false => Appended::Duplicate(
                            stored_msg(&mut tx, group_id, post.msg_id)
                                .await?
                                .ok_or(Error::Corrupt("msg_id"))?,
                        ),
                    },
                };
            }
            sqlx::query("UPDATE cs_log_heads SET last_seq = $2 WHERE group_id = $1")
                .bind(group_id.to_vec())
                .bind(last)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(result)
    }

    /// Envelopes of a group after a position, oldest first.
    pub async fn fetch_log(
        &self,
        group_id: &[u8],
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEnvelope>> {
        self.fetch_log_upto(group_id, after, i64::MAX.unsigned_abs(), limit)
            .await
    }

    /// Like [`CsStore::fetch_log`], never past position `upto` (a departed
    /// member's last).
    pub async fn fetch_log_upto(
        &self,
        group_id: &[u8],
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<StoredEnvelope>> {
        let rows = sqlx::query(
            "SELECT log_seq, envelope, stored_at_ms FROM cs_log WHERE group_id = $1 AND log_seq > $2 \
             AND log_seq <= $3 ORDER BY log_seq LIMIT $4",
        )
        .bind(group_id.to_vec())
        .bind(to_i64(after)?)
        .bind(to_i64(upto.min(i64::MAX.unsigned_abs()))?)
        .bind(i64::from(limit))
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEnvelope {
                    log_seq: get_u64(r, "log_seq")?,
                    envelope: r.try_get("envelope")?,
                    stored_at_ms: get_u64(r, "stored_at_ms")?,
                })
            })
            .collect()
    }

    /// Deletes a group's envelopes stored before `before_ms` (retention).
    pub async fn purge_log(&self, group_id: &[u8], before_ms: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM cs_log WHERE group_id = $1 AND stored_at_ms < $2")
                .bind(group_id.to_vec())
                .bind(before_ms)
                .execute(self.w())
                .await?
                .rows_affected(),
        )
    }
}

/// Records, in `set_members`'s transaction, who departs (every current
/// member not in `members`, or all when the group is deleted) with the
/// group's last log position; a member back in the list is no longer
/// departed.
async fn record_departures(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    group_id: &[u8],
    members: &[String],
    deleted: bool,
) -> Result<()> {
    // The group's last position, its row held to the end of the
    // transaction (an append on another process waits, then lands after).
    let upto = lock_head(tx, group_id).await?;
    let current = sqlx::query("SELECT user_id FROM cs_members WHERE group_id = $1")
        .bind(group_id.to_vec())
        .fetch_all(&mut **tx)
        .await?;
    for row in &current {
        let user: String = row.try_get("user_id")?;
        if deleted || !members.contains(&user) {
            sqlx::query(
                "INSERT INTO cs_departed (group_id, user_id, upto_seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET upto_seq = excluded.upto_seq",
            )
            .bind(group_id.to_vec())
            .bind(user)
            .bind(upto)
            .execute(&mut **tx)
            .await?;
        }
    }
    for m in members.iter().filter(|_| !deleted) {
        sqlx::query("DELETE FROM cs_departed WHERE group_id = $1 AND user_id = $2")
            .bind(group_id.to_vec())
            .bind(m.clone())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// `$1, $2, … $n` (SQL placeholders both backends read).
fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `$first, … $(first + n - 1)`.
fn placeholders_from(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
