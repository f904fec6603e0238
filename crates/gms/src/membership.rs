//! Member-signed membership on the GMS (SPEC §4.7): every call that changes
//! membership carries a change signed by its caller; the GMS checks it with
//! the same pure rules as every terminal ([`State::apply`]) before it applies
//! it, stores it beside the grant it causes, and serves the chain
//! (`GetChanges`). The GMS orders changes; it cannot make one.

use crate::Gms;
use duokey_crypto::membership::{Rule, SignedChange, State};
use std::sync::PoisonError;
use tonic::Status;

/// The verified state of one group's chain, as the GMS caches it.
pub(crate) type Cache = std::sync::Mutex<std::collections::HashMap<Vec<u8>, State>>;

/// The signed change of a request: strictly decoded, of group `gid`, signed
/// in the caller's name (its signature is checked by [`State::apply`]).
pub(crate) fn parse_change(bytes: &[u8], gid: &[u8], caller: &str) -> Result<SignedChange, Status> {
    if bytes.is_empty() {
        return Err(Status::invalid_argument(
            "this call needs the caller's signed membership change (SPEC §4.7); update the terminal",
        ));
    }
    let change = SignedChange::parse(bytes)
        .map_err(|e| Status::invalid_argument(format!("membership change: {e}")))?;
    if change.change().group_id.as_bytes().as_slice() != gid {
        return Err(Status::invalid_argument(
            "the membership change names another group",
        ));
    }
    if change.change().actor.as_str() != caller {
        return Err(Status::permission_denied(
            "a membership change must be signed by the caller",
        ));
    }
    Ok(change)
}

/// The answer to a change the rules refuse: `ABORTED` when it was signed on
/// an older head (fetch the changes, re-check, sign again), otherwise the
/// rule it breaks.
pub(crate) fn refusal(e: duokey_crypto::Error) -> Status {
    match e {
        duokey_crypto::Error::Membership(Rule::Seq | Rule::Prev) => Status::aborted(
            "the group's membership changed since this change was signed; fetch the changes, check and sign again",
        ),
        duokey_crypto::Error::Membership(rule) => {
            metrics::counter!("duokey_refusals_total", "reason" => "membership_rule").increment(1);
            Status::permission_denied(format!("membership change refused: {rule}"))
        }
        other => Status::invalid_argument(format!("membership change refused: {other}")),
    }
}

impl Gms {
    /// The verified state of `gid`'s chain: cached while the stored chain
    /// ends where the cache does, else extended or rebuilt from the stored
    /// changes. Call under the group's lock.
    pub(crate) async fn membership(&self, gid: &[u8]) -> Result<State, Status> {
        let stored = self.inner.db.membership_seq(gid).await?;
        let cached = self.cache().get(gid).cloned();
        let mut state = match cached {
            Some(s) if s.seq == stored => return Ok(s),
            Some(s) if s.seq < stored => Some(s),
            _ => None,
        };
        // Another process (a second GMS node, an import) stored changes this
        // one has not seen: verify them on top of what it knows.
        while state.as_ref().map_or(0, |s| s.seq) < stored {
            let after = state.as_ref().map_or(0, |s| s.seq);
            let page = self.inner.db.changes(gid, after, 500).await?;
            if page.is_empty() {
                break;
            }
            for row in page {
                let change = SignedChange::parse(&row.change)
                    .map_err(|_| Status::internal("a stored membership change is corrupt"))?;
                duokey_crypto::membership::extend(&mut state, &change)
                    .map_err(|_| Status::internal("the stored membership chain does not verify"))?;
            }
        }
        let state = state.ok_or_else(|| Status::internal("the group has no membership chain"))?;
        self.remember(gid, &state);
        Ok(state)
    }

    /// Records `gid`'s state after a change was stored.
    pub(crate) fn remember(&self, gid: &[u8], state: &State) {
        self.cache().insert(gid.to_vec(), state.clone());
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Vec<u8>, State>> {
        self.inner
            .membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
