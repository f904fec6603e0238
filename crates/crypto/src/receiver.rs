//! What a receiver must know to open envelopes (SPEC §3.3 checks V4 and V5).

use crate::envelope::Header;
use crate::epoch::Epoch;
use crate::error::{Error, Result};
use crate::group_key::GroupKey;
use crate::identity::PublicIdentity;
use crate::ids::{GroupId, UserId};
use std::collections::HashMap;

/// What a receiver knows about the epochs and members of its groups (SPEC
/// §3.3, §4.5). The grace window and "sender still a member" rules of SPEC
/// §4.5 live in the answers of the implementation.
pub trait ReceiverState {
    /// V4: the group key of `epoch`, or [`Error::UnknownEpoch`] (the caller
    /// then fetches the grant, SPEC §4.5) or [`Error::EpochClosed`].
    fn group_key(&self, group: &GroupId, epoch: Epoch) -> Result<&GroupKey>;
    /// V5: the certified key of `sender` if it may send in `epoch`, else
    /// [`Error::NotAMember`].
    fn member_key(&self, group: &GroupId, epoch: Epoch, sender: &UserId)
    -> Result<&PublicIdentity>;
}

/// One open epoch: its group key and the members allowed to send in it.
#[derive(Debug, Clone)]
pub struct OpenEpoch {
    /// The group key.
    pub key: GroupKey,
    /// Senders accepted in this epoch with their certified keys.
    pub senders: HashMap<UserId, PublicIdentity>,
}

/// A [`ReceiverState`] held in memory: the epochs a terminal can open right
/// now. Closing an epoch drops (and so zeroizes) its key.
#[derive(Debug, Clone, Default)]
pub struct EpochTable {
    epochs: HashMap<(GroupId, Epoch), OpenEpoch>,
}

impl EpochTable {
    /// A table with only the epoch of `header` open, under group key `key`,
    /// and only `header.sender`, certified as `sender_key`, allowed to send
    /// in it: what opening that sender's envelopes needs (tests, benchmarks).
    pub fn for_header(header: &Header, key: GroupKey, sender_key: PublicIdentity) -> Self {
        let senders = HashMap::from([(header.sender.clone(), sender_key)]);
        let mut table = Self::default();
        table.insert(header.group_id, header.epoch, OpenEpoch { key, senders });
        table
    }

    /// Opens (or replaces) an epoch.
    pub fn insert(&mut self, group: GroupId, epoch: Epoch, open: OpenEpoch) {
        self.epochs.insert((group, epoch), open);
    }

    /// Closes an epoch; its key is zeroized.
    pub fn remove(&mut self, group: &GroupId, epoch: Epoch) -> Option<OpenEpoch> {
        self.epochs.remove(&(*group, epoch))
    }

    /// The epoch, if open.
    pub fn get(&self, group: &GroupId, epoch: Epoch) -> Option<&OpenEpoch> {
        self.epochs.get(&(*group, epoch))
    }

    /// Closes every epoch of `group` with an RN2 version below `rn2_version`.
    pub fn close_before(&mut self, group: &GroupId, rn2_version: u64) {
        self.epochs
            .retain(|(g, e), _| g != group || e.rn2_version >= rn2_version);
    }
}

impl ReceiverState for EpochTable {
    fn group_key(&self, group: &GroupId, epoch: Epoch) -> Result<&GroupKey> {
        self.get(group, epoch)
            .map(|e| &e.key)
            .ok_or(Error::UnknownEpoch {
                group: *group,
                epoch,
            })
    }

    fn member_key(
        &self,
        group: &GroupId,
        epoch: Epoch,
        sender: &UserId,
    ) -> Result<&PublicIdentity> {
        self.get(group, epoch)
            .and_then(|e| e.senders.get(sender))
            .ok_or_else(|| Error::NotAMember {
                user: sender.clone(),
                group: *group,
                epoch,
            })
    }
}
