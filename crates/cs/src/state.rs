//! The CS's shared state: storage, the in-memory membership view (loaded at
//! start, updated by `SetMembers` and, in a cluster, by the other nodes'
//! frames), subscriptions and rate limits.

use crate::CsConfig;
use crate::hub::Hub;
use crate::writer::PostJob;
use duokey_proto::{Delivery, delivery};
use duokey_storage::CsStore;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::mpsc;
use tonic::Status;

/// What the CS knows about one group.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupView {
    pub(crate) rn2_version: u64,
    pub(crate) deleted: bool,
    pub(crate) retention_secs: u64,
    pub(crate) members: HashSet<String>,
    /// Departed members and the last log position each may still read.
    pub(crate) departed: HashMap<String, u64>,
}

pub(crate) struct CsState {
    pub(crate) db: CsStore,
    pub(crate) config: CsConfig,
    pub(crate) groups: RwLock<HashMap<Vec<u8>, GroupView>>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) limiter: duokey_pki::clock::KeyedLimiter<String>,
    /// Certificate fingerprint last recorded in the directory, per user.
    pub(crate) recorded: Mutex<HashMap<String, [u8; 32]>>,
    pub(crate) writer: mpsc::Sender<PostJob>,
    /// The other CS nodes (DESIGN D49); `None` on a single node.
    pub(crate) bus: Option<Arc<duokey_bus::Bus>>,
}

impl From<duokey_storage::cs::GroupState> for GroupView {
    fn from(s: duokey_storage::cs::GroupState) -> GroupView {
        GroupView {
            rn2_version: s.group.rn2_version,
            deleted: s.group.deleted,
            retention_secs: s.group.retention_secs,
            members: s.members.into_iter().collect(),
            departed: s.departed.into_iter().collect(),
        }
    }
}

impl CsState {
    /// Now, on the CS's clock, as the database stores it.
    pub(crate) fn now_ms(&self) -> i64 {
        self.config.clock.now_ms_i64()
    }

    pub(crate) async fn load(
        db: CsStore,
        config: CsConfig,
        writer: mpsc::Sender<PostJob>,
        bus: Option<Arc<duokey_bus::Bus>>,
    ) -> duokey_storage::Result<CsState> {
        let mut groups: HashMap<Vec<u8>, GroupView> = HashMap::new();
        for (gid, g) in db.cs_all_groups().await? {
            groups.insert(
                gid,
                GroupView {
                    rn2_version: g.rn2_version,
                    deleted: g.deleted,
                    retention_secs: g.retention_secs,
                    ..Default::default()
                },
            );
        }
        for (gid, user) in db.cs_all_members().await? {
            groups.entry(gid).or_default().members.insert(user);
        }
        for (gid, user, upto) in db.cs_all_departed().await? {
            groups.entry(gid).or_default().departed.insert(user, upto);
        }
        Ok(CsState {
            db,
            hub: Hub::new(crate::hub::Bounds {
                deliveries: config.subscriber_queue,
                bytes: config.subscriber_queue_bytes,
                per_user: config.streams_per_user,
            }),
            limiter: duokey_pki::clock::keyed_limiter(
                config.rate_per_sec,
                config.rate_burst,
                &config.clock,
            ),
            config,
            groups: RwLock::new(groups),
            recorded: Mutex::new(HashMap::new()),
            writer,
            bus,
        })
    }

    /// Whether other CS nodes share the database.
    pub(crate) fn clustered(&self) -> bool {
        self.bus.is_some()
    }

    /// Tells the other nodes (if any) what just committed.
    pub(crate) fn tell_others(&self, body: duokey_proto::bus_frame::Body) {
        if let Some(bus) = &self.bus {
            bus.publish(duokey_bus::Topic::Cs, body);
        }
    }

    /// Re-reads a group from the database into the view (another node
    /// changed it), unless the view already holds a newer version.
    pub(crate) async fn refresh_group(&self, gid: &[u8]) -> Result<(), Status> {
        let Some(state) = self.db.cs_group_view(gid).await? else {
            return Ok(());
        };
        self.install(gid, state.into());
        Ok(())
    }

    /// Puts a group's view in place, unless the one held is newer.
    pub(crate) fn install(&self, gid: &[u8], view: GroupView) {
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        if groups
            .get(gid)
            .is_none_or(|g| g.rn2_version <= view.rn2_version)
        {
            groups.insert(gid.to_vec(), view);
        }
    }

    /// The version of a group's view (0 if unknown).
    pub(crate) fn version_of(&self, gid: &[u8]) -> u64 {
        self.with_group(gid, |g| g.rn2_version).unwrap_or(0)
    }

    /// `RESOURCE_EXHAUSTED` when `user` is over its rate.
    pub(crate) fn rate_limit(&self, user: &str) -> Result<(), Status> {
        self.limiter.check_key(&user.to_owned()).map_err(|_| {
            metrics::counter!("duokey_refusals_total", "reason" => "rate_limited").increment(1);
            Status::resource_exhausted("rate limit exceeded for this user; slow down and retry")
        })
    }

    /// Runs `f` on a group's view, if the CS knows the group.
    pub(crate) fn with_group<T>(&self, gid: &[u8], f: impl FnOnce(&GroupView) -> T) -> Option<T> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(gid)
            .map(f)
    }

    /// `PERMISSION_DENIED` unless `user` is a current member of a live group.
    /// A sender whose envelope names a key (RN2 version) newer than the
    /// membership this server has learned gets `UNAVAILABLE` instead: the
    /// GMS has not told it yet (a group just created, a member just
    /// added), so the terminal keeps the message and sends it again.
    pub(crate) fn require_member(
        &self,
        gid: &[u8],
        user: &str,
        claimed_rn2: u64,
    ) -> Result<(), Status> {
        let view = self.with_group(gid, |g| {
            (g.deleted, g.members.contains(user), g.rn2_version)
        });
        match view {
            Some((false, true, _)) => Ok(()),
            Some((true, _, _)) => Err(Status::failed_precondition("the group was deleted")),
            Some((false, false, known)) if claimed_rn2 > known => Err(not_learned_yet()),
            None if claimed_rn2 > 0 => Err(not_learned_yet()),
            _ => Err(not_a_member()),
        }
    }

    /// Who may read a group's log, and how far: `Ok(None)` for a current
    /// member of a live group (all of it), `Ok(Some(upto))` for a departed
    /// member (up to the last position it was a member for, also after a
    /// deletion: what was said while it was a member stays its own),
    /// `PERMISSION_DENIED` for anyone else.
    pub(crate) fn readable_upto(&self, gid: &[u8], user: &str) -> Result<Option<u64>, Status> {
        let view = self.with_group(gid, |g| {
            (
                g.deleted,
                g.members.contains(user),
                g.departed.get(user).copied(),
            )
        });
        match view {
            Some((false, true, _)) => Ok(None),
            Some((_, _, Some(upto))) => Ok(Some(upto)),
            Some((true, _, None)) => Err(Status::failed_precondition("the group was deleted")),
            _ => Err(not_a_member()),
        }
    }

    /// Queues a delivery for every live subscription it concerns.
    pub(crate) fn fan_out(&self, d: Delivery, committed: std::time::Instant) {
        let targets: Vec<String> = match &d.event {
            Some(delivery::Event::Envelope(e)) => self
                .with_group(&e.group_id, |g| g.members.iter().cloned().collect())
                .unwrap_or_default(),
            Some(delivery::Event::Item(_)) | None => return,
        };
        let size = prost::Message::encoded_len(&d);
        let shared = (Arc::new(d), size, committed);
        let mut sent = 0;
        for user in targets {
            sent += self.hub.send_to(&user, &shared);
        }
        metrics::counter!("duokey_cs_deliveries_total").increment(sent as u64);
    }
}

/// The caller is not a member of the group (counted).
pub(crate) fn not_a_member() -> Status {
    metrics::counter!("duokey_refusals_total", "reason" => "not_a_member").increment(1);
    Status::permission_denied("you are not a member of this group")
}

/// The membership a post names is newer than this server knows.
fn not_learned_yet() -> Status {
    Status::unavailable(
        "this server has not yet learned the group's latest membership; \
         your message is kept and sent again shortly",
    )
}
