//! # duokey-terminal — the end terminal (SPEC §4, §6, §8)
//!
//! All client logic, usable without the command line: the profile store
//! (identity, certificates, groups, R1 and RN2 per epoch, history, cursors;
//! secrets sealed under an Argon2id-derived key), the sync engine (inbox,
//! grants, RN1 delivery and rotation, RN2 versions, stale notices) and every
//! flow of SPEC §4. RN1 never leaves the members' terminals except
//! HPKE-sealed to another member.
//!
//! ## Where things are
//!
//! ```text
//! Terminal (terminal.rs)   the façade: open/init a profile, connect, renew
//!  ├─ flows.rs             the user's commands: create, invite, accept, remove, leave…
//!  ├─ sync.rs              a sync (PROTOCOL §5.1): grants, inbox items, RN1 duties, outbox
//!  ├─ membership.rs        the member-signed history (SPEC §4.7): verify, sign, submit
//!  ├─ rn1.rs               the rn1_wait fallback (SPEC §4.3 step 4, D37)
//!  ├─ delivery.rs          this terminal's delivery key: publish, rotate, erase (D38)
//!  ├─ messages.rs          envelopes: send, open, receiver checks (SPEC §3.3), history
//!  ├─ contacts.rs          pins, safety numbers, revocation of contacts (PROTOCOL §7)
//!  ├─ live.rs              Subscribe/Watch streams and the timer (PROTOCOL §5.1)
//!  └─ store/               the profile database — the only module that speaks SQL
//!       mod.rs             meta, groups, grants, R1s, anchors, items seen/pending
//!       contacts.rs        pinned keys and their confirmation
//!       invites.rs         both sides of SPEC §4.2, states stored by name
//!       history.rs         decrypted messages and the log cursor
//!       outbox.rs          messages written, not yet acknowledged
//! vault.rs                 sealing under the passphrase key (Argon2id)
//! keylog.rs                the opt-in DUOKEY_KEYLOG debug file (SPEC §8)
//! config.rs                client.toml
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod contacts;
mod delivery;
mod error;
mod flows;
pub mod keylog;
pub mod live;
mod membership;
mod messages;
mod rn1;
pub mod store;
mod sync;
mod terminal;
pub mod vault;

pub use config::ClientConfig;
pub use error::{Error, ErrorKind, Result};
pub use flows::{GroupPolicy, PolicyChange, PolicyView};
pub use live::{Backoff, Live, LiveEvent, LiveUpdate};
pub use membership::MembershipCode;
pub use messages::{Line, Message, Notice, OpenCache, UNREADABLE};
pub use store::GroupState;
pub use terminal::{GroupInfo, Invitation, MemberInfo, SendOutcome, Terminal, Waiting};

/// Crash injection for tests: in debug builds, when the
/// environment variable `DUOKEY_FAILPOINT` names this point, the process
/// aborts here, as a power cut or `kill -9` would. Release builds hold no
/// failpoint.
pub(crate) fn failpoint(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("DUOKEY_FAILPOINT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Unix time in milliseconds (the clock every role reads).
pub use duokey_pki::clock::now_ms;
