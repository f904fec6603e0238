//! Replay protection per (group, epoch, sender), by `seq` and by `msg_id`
//! (SPEC §3.3, checks V7 and V8), in bounded memory.
//!
//! # Bounds
//! * Per stream (one sender in one epoch of one group): the highest `seq`
//!   accepted, a bitmap of the [`WINDOW`] sequence numbers below it, and the
//!   `msg_id`s of the accepted messages of (at least) that window — at most
//!   2 × [`WINDOW`] ids, about 16 KiB.
//! * At most `max_streams` streams ([`DEFAULT_MAX_STREAMS`] by default). A
//!   terminal normally stays far below it: it calls
//!   [`ReplayGuard::close_before`] when it erases an epoch's keys, so only
//!   senders of epochs it can still open have a stream (at most 10,000
//!   members × the epochs inside the grace window per group).
//!
//! # What happens at a bound
//! * A `seq` more than [`WINDOW`] below the highest accepted one is refused
//!   as [`Error::ReplayedSeq`]: it cannot be told apart from a replay. The CS
//!   log delivers a sender's messages almost in order, so this costs nothing
//!   in practice.
//! * When a new stream would exceed `max_streams`, the least recently used
//!   stream is forgotten and its group's *floor* is raised to that stream's
//!   RN2 version: every envelope of that group at or below the floor is then
//!   refused as [`Error::ReplayedSeq`]. Forgetting state therefore never
//!   re-opens a replay; it only closes old epochs early.

use crate::epoch::Epoch;
use crate::error::{Error, Result};
use crate::ids::{GroupId, MsgId, UserId};
use std::collections::HashMap;

/// How many sequence numbers below the highest one are remembered.
pub const WINDOW: u64 = 256;
/// Default bound on the number of (group, epoch, sender) streams.
pub const DEFAULT_MAX_STREAMS: usize = 65_536;

const WORDS: usize = 4;
const _: () = assert!(WORDS as u64 * 64 == WINDOW, "the bitmap covers the window");

/// The index of the bitmap word holding `offset` (`None` past any usize).
fn word_of(offset: u64) -> Option<usize> {
    usize::try_from(offset / 64).ok()
}

/// One (group, epoch, sender) stream.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StreamKey {
    /// The group.
    pub group: GroupId,
    /// The epoch of the envelope.
    pub epoch: Epoch,
    /// The sender.
    pub sender: UserId,
}

#[derive(Debug, Clone, Default)]
struct Stream {
    /// Highest accepted seq, if any.
    highest: Option<u64>,
    /// Bit `i` set: `highest - i` was accepted (`i < WINDOW`).
    seen: [u64; WORDS],
    /// msg_id → seq of accepted messages inside the window.
    ids: HashMap<MsgId, u64>,
    last_used: u64,
}

impl Stream {
    fn bit(&self, offset: u64) -> bool {
        let b = offset % 64;
        word_of(offset)
            .and_then(|w| self.seen.get(w))
            .is_some_and(|word| word >> b & 1 == 1)
    }

    fn check(&self, seq: u64, msg_id: &MsgId) -> Result<()> {
        if self.ids.contains_key(msg_id) {
            // A msg_id seen in this stream, also if it has left the window.
            return Err(Error::ReplayedMsgId);
        }
        match self.highest {
            Some(h) if seq <= h && (h - seq >= WINDOW || self.bit(h - seq)) => {
                Err(Error::ReplayedSeq { seq })
            }
            _ => Ok(()),
        }
    }

    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (Some(words), bits) = (word_of(by), by % 64) else {
            self.seen = [0; WORDS];
            return;
        };
        let old = self.seen;
        for (i, slot) in self.seen.iter_mut().enumerate() {
            let src = i.checked_sub(words);
            let hi = src.and_then(|s| old.get(s)).copied().unwrap_or(0) << bits;
            let lo = match (bits, src.and_then(|s| s.checked_sub(1))) {
                (0, _) | (_, None) => 0,
                (_, Some(s)) => old.get(s).copied().unwrap_or(0) >> (64 - bits),
            };
            *slot = hi | lo;
        }
    }

    fn commit(&mut self, seq: u64, msg_id: MsgId) {
        let h = match self.highest {
            Some(h) if seq <= h => h,
            Some(h) => {
                self.shift(seq - h);
                seq
            }
            None => seq,
        };
        self.highest = Some(h);
        let offset = h - seq;
        if let Some(word) = word_of(offset).and_then(|w| self.seen.get_mut(w)) {
            *word |= 1 << (offset % 64);
        }
        self.ids.insert(msg_id, seq);
        // Prune in batches so a message costs O(1) amortised; the map never
        // holds more than 2 × WINDOW ids.
        if self.ids.len() >= 2 * WORDS * 64 {
            self.ids.retain(|_, s| h - *s < WINDOW);
        }
    }
}

/// Replay state of one terminal (SPEC §3.3, V7 and V8).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    streams: HashMap<StreamKey, Stream>,
    floors: HashMap<GroupId, u64>,
    max_streams: usize,
    clock: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_STREAMS)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `max_streams` streams (at least 1).
    pub fn new(max_streams: usize) -> Self {
        Self {
            streams: HashMap::new(),
            floors: HashMap::new(),
            max_streams: max_streams.max(1),
            clock: 0,
        }
    }

    /// Number of streams remembered.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// V7, V8: refuses a `msg_id` or `seq` already accepted in this stream,
    /// without recording anything.
    pub fn check(&self, key: &StreamKey, seq: u64, msg_id: &MsgId) -> Result<()> {
        if self
            .floors
            .get(&key.group)
            .is_some_and(|f| key.epoch.rn2_version <= *f)
        {
            return Err(Error::ReplayedSeq { seq });
        }
        self.streams
            .get(key)
            .map_or(Ok(()), |s| s.check(seq, msg_id))
    }

    /// Records an envelope that passed every check. Call only after
    /// [`ReplayGuard::check`] succeeded for the same values.
    pub fn commit(&mut self, key: &StreamKey, seq: u64, msg_id: MsgId) {
        self.clock += 1;
        if !self.streams.contains_key(key) && self.streams.len() >= self.max_streams {
            self.evict_least_recent();
        }
        let stream = self.streams.entry(key.clone()).or_default();
        stream.last_used = self.clock;
        stream.commit(seq, msg_id);
    }

    fn evict_least_recent(&mut self) {
        let oldest = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.streams.remove(&k);
            let floor = self.floors.entry(k.group).or_insert(0);
            *floor = (*floor).max(k.epoch.rn2_version);
        }
    }

    /// Forgets every stream of `group` at RN2 versions below `rn2_version`,
    /// and refuses them from now on (their keys were erased, SPEC §7.5).
    pub fn close_before(&mut self, group: &GroupId, rn2_version: u64) {
        let below = rn2_version.saturating_sub(1);
        self.streams
            .retain(|k, _| k.group != *group || k.epoch.rn2_version > below);
        let floor = self.floors.entry(*group).or_insert(0);
        *floor = (*floor).max(below);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sender: &str, rn2: u64) -> StreamKey {
        StreamKey {
            group: GroupId([1; 16]),
            epoch: Epoch::new(1, rn2),
            sender: UserId::new(sender).unwrap(),
        }
    }

    fn accept(g: &mut ReplayGuard, k: &StreamKey, seq: u64, id: u8) -> Result<()> {
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&seq.to_be_bytes());
        m[15] = id;
        g.check(k, seq, &MsgId(m))?;
        g.commit(k, seq, MsgId(m));
        Ok(())
    }

    /// A guard that has accepted `seqs` (last message-id byte 0) from alice at
    /// RN2 version 1, and her stream's key.
    fn alice_accepted(seqs: impl IntoIterator<Item = u64>) -> (ReplayGuard, StreamKey) {
        let mut g = ReplayGuard::default();
        let k = key("alice", 1);
        for seq in seqs {
            accept(&mut g, &k, seq, 0).unwrap();
        }
        (g, k)
    }

    #[test]
    fn same_seq_or_msg_id_is_refused_out_of_order_is_accepted() {
        let (mut g, k) = alice_accepted([0, 2, 1, 10, 5]);
        for seq in [0, 1, 2, 5, 10] {
            assert!(
                matches!(accept(&mut g, &k, seq, 9), Err(Error::ReplayedSeq { .. })),
                "{seq}"
            );
        }
        // Same msg_id with a fresh seq.
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&10u64.to_be_bytes());
        assert_eq!(g.check(&k, 11, &MsgId(m)), Err(Error::ReplayedMsgId));
        // Another sender or epoch is another stream.
        accept(&mut g, &key("bob", 1), 0, 0).unwrap();
        accept(&mut g, &key("alice", 2), 0, 0).unwrap();
    }

    #[test]
    fn seq_below_the_window_is_refused_and_memory_stays_bounded() {
        let (mut g, k) = alice_accepted(0..5 * WINDOW);
        let s = g.streams.get(&k).unwrap();
        assert!(s.ids.len() as u64 <= 2 * WINDOW);
        let top = 5 * WINDOW - 1;
        assert!(accept(&mut g, &k, top - WINDOW, 1).is_err());
        assert!(
            accept(&mut g, &k, top - WINDOW + 1, 1).is_err(),
            "inside window, already seen"
        );
        accept(&mut g, &k, top + 3 * WINDOW, 0).unwrap();
        accept(&mut g, &k, top + 3 * WINDOW - 1, 0).unwrap();
    }

    #[test]
    fn window_shift_keeps_bits_across_words() {
        let (mut g, k) = alice_accepted([0, 63, 64, 65, 130]);
        for seq in [0, 63, 64, 65, 130] {
            assert!(accept(&mut g, &k, seq, 7).is_err(), "{seq}");
        }
        for seq in [1, 62, 66, 129] {
            accept(&mut g, &k, seq, 0).unwrap();
        }
    }

    #[test]
    fn evicting_a_stream_closes_its_epoch_instead_of_reopening_replays() {
        let mut g = ReplayGuard::new(2);
        accept(&mut g, &key("alice", 1), 0, 0).unwrap();
        accept(&mut g, &key("bob", 2), 0, 0).unwrap();
        accept(&mut g, &key("carol", 3), 0, 0).unwrap();
        assert_eq!(g.streams(), 2);
        assert!(
            accept(&mut g, &key("alice", 1), 0, 0).is_err(),
            "evicted stream must stay closed"
        );
        assert!(accept(&mut g, &key("dave", 1), 0, 0).is_err());
        g.close_before(&GroupId([1; 16]), 3);
        assert!(accept(&mut g, &key("bob", 2), 1, 0).is_err());
        accept(&mut g, &key("carol", 3), 1, 0).unwrap();
    }
}
