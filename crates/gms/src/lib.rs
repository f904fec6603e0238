//! # duokey-gms — the Group Management Server (SPEC §4, §5.2)
//!
//! Holds groups, members, rights, policy and the RN2 history of each group,
//! hands current members their RN2 grants over mutual TLS, and replaces RN2
//! periodically and on every join, removal and leave. It never holds RN1, a
//! group key or content.
//!
//! Changes to one group are serialised (one lock per group, and a version
//! check in the database): RN2 versions strictly increase with no gaps or
//! duplicates. Every membership change is queued for the CS in the same
//! transaction (`gms_cs_outbox`) and pushed by [`cs_sync`] until the CS
//! acknowledges it, so a CS that was down or lagging is repaired as soon as
//! it answers again.
#![forbid(unsafe_code)]

mod cluster;
pub mod cs_sync;
mod grants;
mod membership;
pub mod policy;
mod service;
mod watch;

pub use watch::WatchStream;

use duokey_proto::group_management_server::GroupManagementServer;
use duokey_storage::GmsStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

/// How long a GMS node holds the groups it claimed for rotation: another
/// node takes them over after this if the first one died.
const ROTATION_LEASE_MS: i64 = 60_000;

/// GMS settings.
#[derive(Debug, Clone)]
pub struct GmsConfig {
    /// Shortest `rotate_every` a group may ask for (SPEC §4.4: 60 s).
    pub min_rotate_every_secs: u64,
    /// Sustained requests per second per user (each role counts its own).
    pub rate_per_sec: u32,
    /// Request burst per user.
    pub rate_burst: u32,
    /// Longest retention a group may choose.
    pub max_retention_secs: u64,
    /// Most groups one user may be a member of.
    pub max_groups_per_user: u64,
    /// Open `Watch` streams one user may hold.
    pub streams_per_user: usize,
    /// The clock that stamps grants and schedules rotations (D41).
    pub clock: duokey_pki::clock::Clock,
}

impl GmsConfig {
    /// The limits a group's policy must keep.
    pub fn policy_limits(&self) -> policy::PolicyLimits {
        policy::PolicyLimits {
            min_rotate_secs: self.min_rotate_every_secs,
            max_retention_secs: self.max_retention_secs,
        }
    }
}

impl Default for GmsConfig {
    fn default() -> Self {
        Self {
            min_rotate_every_secs: 60,
            rate_per_sec: 200,
            rate_burst: 400,
            max_retention_secs: policy::DEFAULT_MAX_RETENTION_SECS,
            max_groups_per_user: 1000,
            streams_per_user: 8,
            clock: duokey_pki::clock::Clock::system(),
        }
    }
}

/// The GMS: its state and gRPC service.
#[derive(Clone)]
pub struct Gms {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gms")
    }
}

pub(crate) struct Inner {
    pub(crate) db: GmsStore,
    pub(crate) config: GmsConfig,
    pub(crate) locks: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
    /// Each group's verified membership state (SPEC §4.7), rebuilt from the
    /// stored chain when missing.
    pub(crate) membership: membership::Cache,
    pub(crate) watchers: watch::Watchers,
    /// Woken on every change that the CS must learn.
    pub(crate) cs_changed: Notify,
    /// Woken when a group is created (the scheduler recomputes its next wake-up).
    pub(crate) schedule_changed: Notify,
    /// Per-certificate request limits (abuse).
    pub(crate) limiter: duokey_pki::clock::KeyedLimiter<String>,
    /// (rounds finished, groups still pending after the last round) of the CS sync.
    pub(crate) cs_pending: tokio::sync::watch::Sender<(u64, usize)>,
    /// The other GMS nodes (DESIGN D49); `None` on a single node.
    pub(crate) bus: Option<Arc<duokey_bus::Bus>>,
}

impl Gms {
    /// Whether other GMS nodes share the database.
    pub(crate) fn clustered(&self) -> bool {
        self.inner.bus.is_some()
    }

    /// Tells the other GMS nodes (if any) what just committed.
    pub(crate) fn tell_others(&self, body: duokey_proto::bus_frame::Body) {
        if let Some(bus) = &self.inner.bus {
            bus.publish(duokey_bus::Topic::Gms, body);
        }
    }

    /// Ends every open `Watch` stream (at shutdown).
    pub fn close_streams(&self) {
        self.inner.watchers.close_all();
    }

    /// A GMS on `db`. Start [`cs_sync::run`] and [`Gms::run_scheduler`] beside it.
    pub fn new(db: GmsStore, config: GmsConfig) -> Gms {
        Self::build(db, config, None)
    }

    /// [`Gms::new`] for one node of a cluster (DESIGN D49): the other GMS
    /// nodes share `db` and `bus`; their grants and removals reach the
    /// `Watch` streams open here. Needs a Tokio runtime.
    pub async fn with_bus(
        db: GmsStore,
        config: GmsConfig,
        bus: Arc<duokey_bus::Bus>,
    ) -> Result<Gms, duokey_bus::Error> {
        let frames = bus.subscribe(duokey_bus::Topic::Gms).await?;
        let gms = Self::build(db, config, Some(bus));
        tokio::spawn(cluster::run(gms.clone(), frames));
        Ok(gms)
    }

    fn build(db: GmsStore, config: GmsConfig, bus: Option<Arc<duokey_bus::Bus>>) -> Gms {
        let limiter =
            duokey_pki::clock::keyed_limiter(config.rate_per_sec, config.rate_burst, &config.clock);
        let watchers = watch::Watchers::new(config.streams_per_user);
        Gms {
            inner: Arc::new(Inner {
                db,
                limiter,
                config,
                locks: Mutex::new(HashMap::new()),
                membership: Default::default(),
                watchers,
                cs_changed: Notify::new(),
                schedule_changed: Notify::new(),
                cs_pending: tokio::sync::watch::Sender::new((0, usize::MAX)),
                bus,
            }),
        }
    }

    /// The gRPC service.
    pub fn service(&self) -> GroupManagementServer<Gms> {
        GroupManagementServer::new(self.clone())
    }

    /// The database (for operators' tools and tests).
    pub fn db(&self) -> &GmsStore {
        &self.inner.db
    }

    /// Waits until a CS sync round finished with nothing pending, after every
    /// change made before this call (operators' tools and tests).
    pub async fn cs_caught_up(&self) {
        let mut rx = self.inner.cs_pending.subscribe();
        let start = rx.borrow().0;
        // A round already running may have read the outbox before our
        // change; the round after it certainly started after this call.
        loop {
            self.inner.cs_changed.notify_one();
            if rx.changed().await.is_err() {
                return;
            }
            let (rounds, pending) = *rx.borrow();
            if rounds >= start + 2 && pending == 0 {
                return;
            }
        }
    }

    /// The lock that serialises changes of one group.
    pub(crate) fn group_lock(&self, gid: &[u8]) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(gid.to_vec()).or_default().clone()
    }

    /// Rotates every group whose period has elapsed at `now_ms` (SPEC §4.4)
    /// and that this node could claim (no other GMS node holds it).
    /// Returns how many groups were rotated.
    pub async fn rotate_due(&self, now_ms: i64) -> usize {
        let lease = now_ms.saturating_add(ROTATION_LEASE_MS);
        let due = match self.inner.db.claim_due_rotations(now_ms, lease, 1000).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot list due rotations");
                return 0;
            }
        };
        let mut rotated = 0;
        for gid in due {
            match self.periodic_rotation(&gid, now_ms).await {
                Ok(true) => rotated += 1,
                Ok(false) => {}
                Err(status) => {
                    tracing::warn!(group = %hex(&gid), %status, "periodic rotation failed")
                }
            }
        }
        rotated
    }

    /// Now, on the GMS's clock, as the database stores it.
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.config.clock.now_ms_i64()
    }

    /// Runs the periodic rotation scheduler until the process ends.
    pub async fn run_scheduler(self) {
        loop {
            // Taken before reading the time: a test's clock advance (D41)
            // wakes the scheduler as a real wait would end.
            let advanced = self.inner.config.clock.advanced();
            let now = self.now_ms();
            self.rotate_due(now).await;
            let next = self
                .inner
                .db
                .next_rotation_due()
                .await
                .ok()
                .flatten()
                .unwrap_or(now + 60_000);
            let wait = u64::try_from(next.saturating_sub(self.now_ms()))
                .unwrap_or(0)
                .clamp(10, 60_000);
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                _ = self.inner.schedule_changed.notified() => {}
                _ = advanced => {}
            }
        }
    }

    /// Erases grants older than each group's retention, except the current
    /// one (SPEC §4.5). Returns how many were erased.
    pub async fn purge_expired(&self, now_ms: i64) -> duokey_storage::Result<u64> {
        let mut total = 0;
        for g in self.inner.db.live_groups().await? {
            let policy = grants::decode_policy(&g.policy);
            let keep_ms =
                i64::try_from(policy.retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            total += self
                .inner
                .db
                .purge_grants(&g.group_id, now_ms.saturating_sub(keep_ms), g.rn2_version)
                .await?;
        }
        if total > 0 {
            self.inner.db.checkpoint().await?;
        }
        Ok(total)
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
